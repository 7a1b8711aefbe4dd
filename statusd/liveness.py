"""Liveness bookkeeping in Redis (no SQL on the hot path): who was seen when, who is still PENDING.

Ingest records `last_seen` in the same script call as its XADDs; polls record it here; the sweeper
reads both sorted sets to find stale workloads without scanning the SQL table (what counts as
stale, and the bounds of those reads, is statusd.staleness's rule).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from statusd.keys import BUCKET_VALUE_LUA, Keys, split_value
from statusd.redis_runtime import Script

# The registration buckets (keys.registration): workload id -> "<generation>|<newest seq>", one
# field for both, so a tracked workload costs one listpack entry, not two (docs/benchmarks.md).
# Either part may be empty: a registration recorded no seq yet; a seq recorded before a generation
# was (polls, an install that predates generations). Both parts only grow: a rebuild that read an
# older generation from the database must not overwrite the newer one a concurrent registration
# just recorded, and a late or replayed report must not lower the seq. KEYS: bucket keys of one
# shard; ARGV[1]: the part raised (1 generation, 2 seq); ARGV[2]: '1' to clear the seq and drop
# the cached state (a new registration: PENDING, nothing heard yet); ARGV[3]: a JSON array of
# [key index, id, number as a string] (one argument, not three per workload: redis-py packs each
# argument in Python, ~2 us each, which was a fifth of a consumer's CPU at 20,000 heartbeats/s;
# the number is a string because Lua's numbers are doubles and a seq may exceed 2^53). The field
# also holds the cached state (keys.BUCKET_VALUE_LUA): kept as it is unless ARGV[2] is '1'.
RAISE_SCRIPT = (
    BUCKET_VALUE_LUA
    + """
local part, reset = tonumber(ARGV[1]), ARGV[2] == '1'
for _, item in ipairs(cjson.decode(ARGV[3])) do
  local key, id, n = KEYS[item[1]], item[2], item[3]
  local cur = redis.call('HGET', key, id)
  local reg, cache = split_value(cur)
  local gen, seq = '', ''
  if reg ~= '' then gen, seq = string.match(reg, '^([^|]*)|?(.*)$') end
  if reset then seq, cache = '', '' end
  local old = (part == 1) and gen or seq
  if old == '' or tonumber(old) < tonumber(n) then
    if part == 1 then gen = n else seq = n end
  end
  put_value(key, id, gen .. '|' .. seq, cache, cur)
end
return 1
"""
)
GENERATION, SEQ = 1, 2


class Registrations:
    """Writes the registration buckets (generation and newest seq per workload, never backward)
    with one script call per shard (one slot each); `client` may be a pipeline or a MULTI."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = Script(redis, RAISE_SCRIPT)
        self._keys = keys

    async def raise_generations(
        self, generations: Mapping[str, int], client: Any = None, *, new: bool = False
    ) -> None:
        """Record each {id: generation} unless a newer one is; `new` (a registration) also
        clears the seq and drops the cached state: the new registration has not been heard from."""
        await self._raise(GENERATION, generations, client, reset=new)

    async def raise_seqs(self, seqs: Mapping[str, int], client: Any = None) -> None:
        """Record each {id: seq} unless a newer one is."""
        await self._raise(SEQ, seqs, client, reset=False)

    async def _raise(
        self, part: int, numbers: Mapping[str, int], client: Any, *, reset: bool
    ) -> None:
        for ids in self._keys.by_shard(numbers).values():
            bucket_keys: dict[str, int] = {}
            items: list[tuple[int, str, str]] = []
            for wid in ids:
                key = self._keys.registration_of(wid)
                items.append(
                    (bucket_keys.setdefault(key, len(bucket_keys) + 1), wid, str(numbers[wid]))
                )
            args = [part, "1" if reset else "0", orjson.dumps(items)]
            await self._script(keys=list(bucket_keys), args=args, client=client)


def parse_registration(value: bytes | str | None) -> tuple[int | None, int | None]:
    """(generation, newest seq) from a registration bucket's value; None for an absent part."""
    gen, _, seq = split_value(value)[0].partition("|")
    return (int(gen) if gen else None), (int(seq) if seq else None)


async def on_registered(
    redis: Redis,
    keys: Keys,
    workload_id: str,
    at: float,
    *,
    generation: int | None = None,
    shards: int | None = None,
) -> None:
    """A new registration: PENDING from `at` (start-timeout clock); no sign of life yet.

    With `generation`, the generation ingest counts as a sign of life is recorded too (the API
    always passes it; without it, ingest counts any generation's heartbeat). Every key is the
    workload's shard's, so the MULTI stays in one slot. `shards` is accepted for old callers;
    the shard count is the layout's (`keys.shards`)."""
    shard = keys.shard(workload_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.pending_since(shard), {workload_id: at})
        pipe.zrem(keys.last_seen(shard), workload_id)
        if generation is not None:  # drops the cached state too
            await Registrations(redis, keys).raise_generations(
                {workload_id: generation}, client=pipe, new=True
            )
        else:  # no generation to record: still, nothing heard from it, nothing cached for it
            pipe.hdel(keys.registration_of(workload_id), workload_id)
        await pipe.execute()


# Per batch registration: 4 connections, enough to overlap the shards' round trips.
SHARD_MULTIS_IN_FLIGHT = 4


async def on_registered_many(
    redis: Redis, keys: Keys, generations: Mapping[str, int], at: float
) -> None:
    """Many new registrations ({id: generation}) as `on_registered` records one: one MULTI per
    shard (its keys share a slot), at most SHARD_MULTIS_IN_FLIGHT of them at once.

    Each MULTI in flight holds a pooled connection. Sent all at once, a few batch registrations
    in flight (16 shards each) took the whole pool from ingest and the consumers, and the
    exhausted pool answered 503 redis_unavailable for every item of the batch."""
    in_flight = asyncio.Semaphore(SHARD_MULTIS_IN_FLIGHT)

    async def shard_multi(shard: int, ids: list[str]) -> None:
        async with in_flight, redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.pending_since(shard), dict.fromkeys(ids, at))
            pipe.zrem(keys.last_seen(shard), *ids)
            await Registrations(redis, keys).raise_generations(
                {wid: generations[wid] for wid in ids}, client=pipe, new=True
            )
            await pipe.execute()

    await asyncio.gather(
        *(shard_multi(shard, ids) for shard, ids in keys.by_shard(generations).items())
    )


async def forget(redis: Redis, keys: Keys, workload_id: str, *, shards: int | None = None) -> None:
    """A deregistration: stop tracking liveness and drop the cached state (one slot, one MULTI)."""
    shard = keys.shard(workload_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(keys.pending_since(shard), workload_id)
        pipe.zrem(keys.last_seen(shard), workload_id)
        pipe.hdel(keys.registration_of(workload_id), workload_id)  # and its cached state
        await pipe.execute()


async def mark_seen(redis: Redis, keys: Keys, seen: Mapping[str, tuple[float, int | None]]) -> None:
    """Signs of life outside ingest (successful polls): {workload id: (unix time, seq or None)}."""
    if not seen:
        return
    registrations = Registrations(redis, keys)
    # One pipeline, commands grouped by shard (in Redis Cluster each goes to its slot's node).
    async with redis.pipeline(transaction=False) as pipe:
        for shard, ids in keys.by_shard(seen).items():
            pipe.zadd(keys.last_seen(shard), {wid: seen[wid][0] for wid in ids})
            pipe.zrem(keys.pending_since(shard), *ids)
        seqs = {wid: seq for wid, (_, seq) in seen.items() if seq is not None}
        await registrations.raise_seqs(seqs, client=pipe)
        await pipe.execute()


# -- reading the per-shard sets: every reader goes through these, shard by shard -------------


async def tracked(redis: Redis, keys: Keys) -> tuple[int, int]:
    """(ids in last_seen, ids in pending_since) summed over the shards, one pipeline."""
    async with redis.pipeline(transaction=False) as pipe:
        for shard in range(keys.shards):
            pipe.zcard(keys.last_seen(shard))
            pipe.zcard(keys.pending_since(shard))
        counts = await pipe.execute()
    return sum(int(c) for c in counts[0::2]), sum(int(c) for c in counts[1::2])


async def scores(
    redis: Redis, keys: Keys, key_of: Callable[[int], str], workload_ids: Sequence[str]
) -> list[float | None]:
    """ZMSCORE of each id in its shard's set (`key_of` is `keys.last_seen` or
    `keys.pending_since`), in the order of `workload_ids`."""
    if not workload_ids:
        return []
    groups = keys.by_shard(workload_ids)
    async with redis.pipeline(transaction=False) as pipe:
        for shard, ids in groups.items():
            pipe.zmscore(key_of(shard), ids)
        replies = await pipe.execute()
    found: dict[str, float | None] = {}
    for ids, values in zip(groups.values(), replies, strict=True):
        found.update(zip(ids, (None if v is None else float(v) for v in values), strict=True))
    return [found[wid] for wid in workload_ids]


async def registrations(
    redis: Redis, keys: Keys, workload_ids: Sequence[str]
) -> list[tuple[int | None, int | None]]:
    """(generation, newest seq) recorded for each id (HMGET of its bucket), in order."""
    if not workload_ids:
        return []
    groups: dict[str, list[str]] = {}
    for wid in workload_ids:
        groups.setdefault(keys.registration_of(wid), []).append(wid)
    async with redis.pipeline(transaction=False) as pipe:
        for key, ids in groups.items():
            pipe.hmget(key, ids)
        replies = await pipe.execute()
    found: dict[str, tuple[int | None, int | None]] = {}
    for ids, values in zip(groups.values(), replies, strict=True):
        found.update(zip(ids, map(parse_registration, values), strict=True))
    return [found[wid] for wid in workload_ids]


async def seqs(redis: Redis, keys: Keys, workload_ids: Sequence[str]) -> list[int | None]:
    """Newest recorded seq of each id, in order."""
    return [seq for _, seq in await registrations(redis, keys, workload_ids)]


async def at_most(
    redis: Redis, keys: Keys, key_of: Callable[[int], str], max_score: float | str
) -> list[tuple[str, float]]:
    """(id, score) of every member scoring <= `max_score` (a number, or "(x" for < x) over all
    shards' sets, oldest first."""
    async with redis.pipeline(transaction=False) as pipe:
        for shard in range(keys.shards):
            pipe.zrangebyscore(key_of(shard), "-inf", max_score, withscores=True)
        replies = await pipe.execute()
    out = [
        (m.decode() if isinstance(m, bytes) else m, float(score))
        for reply in replies
        for m, score in reply
    ]
    out.sort(key=lambda pair: pair[1])
    return out


async def drop(redis: Redis, keys: Keys, key_of: Callable[[int], str], ids: Sequence[str]) -> None:
    """ZREM the ids from their shards' sets (`key_of` is `keys.last_seen` or
    `keys.pending_since`)."""
    if not ids:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for shard, group in keys.by_shard(ids).items():
            pipe.zrem(key_of(shard), *group)
        await pipe.execute()
