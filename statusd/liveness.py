"""Liveness bookkeeping in Redis (no SQL on the hot path): who was seen when, who is still PENDING.

Ingest records `last_seen` in the same script call as its XADDs; polls record it here; the sweeper
reads both sorted sets to find stale workloads without scanning the SQL table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from statusd.keys import Keys, shard_of
from statusd.lifecycle import FINAL_STATES, State


class StaleReason(StrEnum):
    LOST = "lost"
    UNREACHABLE = "unreachable"
    STALE = "stale"  # no sign of life within STATUSD_HEARTBEAT_TTL
    NEVER_SEEN = "never_seen"  # PENDING past STATUSD_START_TIMEOUT without any sign of life


def silence_counts(now: float, deaf_until: float | None) -> bool:
    """Whether silence (no heartbeat, a failed poll) can mean anything now: not while we could not
    have heard it (statusd.hearing.Hearing.deaf_until)."""
    return deaf_until is None or now >= deaf_until


def staleness(
    state: State,
    last_seen: float | None,
    registered_at: float,
    *,
    heartbeat_ttl: float,
    start_timeout: float,
    now: float,
    deaf_until: float | None = None,
    heard_until: float | None = None,
) -> StaleReason | None:
    """Why a workload needs attention, or None. The one rule the API (`stale`), the stale report
    and the sweeper (its Redis queries and whether a failed poll counts) share; times are unix
    seconds.

    Final states expect no heartbeats. UNREACHABLE and LOST are no contact by definition. A seen
    workload is stale when its last sign of life is older than the TTL; one never seen counts
    from its registration against the start timeout (starting takes longer than a heartbeat).
    `heartbeat_ttl` is the silence allowed now (statusd.hearing.Hearing.silence_ttl: at least
    the paced interval the workloads were told plus grace). Until `deaf_until` (ingest was down,
    or statusd just started: statusd.hearing) silence proves nothing: we could not have heard.
    Silence is counted up to `heard_until` at most (the last moment ingest was known to listen),
    so the first seconds of an ingest outage, before it is noticed, count for nothing either.
    """
    if state in FINAL_STATES:
        return None
    if state is State.LOST:
        return StaleReason.LOST
    if state is State.UNREACHABLE:
        return StaleReason.UNREACHABLE
    if not silence_counts(now, deaf_until):
        return None
    until = now if heard_until is None else min(now, heard_until)
    if last_seen is not None:
        return StaleReason.STALE if until - last_seen > heartbeat_ttl else None
    return StaleReason.NEVER_SEEN if until - registered_at > start_timeout else None


def generation_recorder(redis: Redis) -> AsyncScript:
    """Generations only grow (registry.register): a rebuild that read an older one from the
    database must not overwrite the newer one a concurrent registration just recorded. The same
    never-backward script as seqs; call as
    `await rec(keys=[keys.generations(shard)], args=[id, gen, ...], client=...)`."""
    return redis.register_script(NEVER_BACKWARD_SCRIPT)


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

    With `generation` and `shards`, the generation ingest counts as a sign of life is recorded
    too (the API always passes them; without it, ingest counts any generation's heartbeat)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.pending_since, {workload_id: at})
        pipe.zrem(keys.last_seen, workload_id)
        pipe.hdel(keys.last_seq, workload_id)
        pipe.delete(keys.state(workload_id))
        if generation is not None and shards is not None:
            shard_key = keys.generations(shard_of(workload_id, shards))
            await generation_recorder(redis)(
                keys=[shard_key], args=[workload_id, generation], client=pipe
            )
        await pipe.execute()


async def forget(redis: Redis, keys: Keys, workload_id: str, *, shards: int | None = None) -> None:
    """A deregistration: stop tracking liveness and drop the cached state."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(keys.pending_since, workload_id)
        pipe.zrem(keys.last_seen, workload_id)
        pipe.hdel(keys.last_seq, workload_id)
        pipe.delete(keys.state(workload_id))
        if shards is not None:
            pipe.hdel(keys.generations(shard_of(workload_id, shards)), workload_id)
        await pipe.execute()


# A hash of per-workload numbers that only grow: HSET each (id, n) pair unless the stored value
# is already higher. Seqs (consumers and polls both record the newest observed; a late or
# replayed report must not lower it) and registration generations use it.
NEVER_BACKWARD_SCRIPT = """
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""


def newest_seq_recorder(redis: Redis) -> AsyncScript:
    """The script above, registered on `redis`; call it as
    `await rec(keys=[keys.last_seq], args=[id, seq, id, seq, ...], client=pipe_or_none)`."""
    return redis.register_script(NEVER_BACKWARD_SCRIPT)


async def mark_seen(redis: Redis, keys: Keys, seen: Mapping[str, tuple[float, int | None]]) -> None:
    """Signs of life outside ingest (successful polls): {workload id: (unix time, seq or None)}."""
    if not seen:
        return
    seqs = [x for wid, (_, seq) in seen.items() if seq is not None for x in (wid, seq)]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(keys.last_seen, {wid: at for wid, (at, _) in seen.items()})
        pipe.zrem(keys.pending_since, *seen)
        if seqs:
            await newest_seq_recorder(redis)(keys=[keys.last_seq], args=seqs, client=pipe)
        await pipe.execute()
