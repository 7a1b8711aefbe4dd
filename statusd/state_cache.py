"""Redis cache of each workload's current state, so consumers skip heartbeats that change nothing.

State and version are written by `statusd.transitions` alone: before a state-changing commit it
replaces the entry with a tombstone at the new version, and after the commit it writes the new
state, with a compare-on-version so a slow writer never puts an older state back. Consumers only
raise the entry's newest handled seq (`bump_seqs`); registration and deletion drop the entry. A
missing entry (or a tombstone) only means "ask the database"; it is never wrong, just absent.

A Redis restart is the exception: with AOF fsynced every second (the production setting) a crash
loses the last second of writes, and with them a transition's tombstone and new state, leaving
the entry before it, present and behind the database. A workload the sweeper had just declared
UNREACHABLE would then have its heartbeats skipped as "no change" and stay UNREACHABLE; a
flapping one would have its next change skipped, lost from its history. So after a restart every
entry is dropped (the registration parts stay; `forget_if_restarted`, which compares the
server's identity with the one the cache was filled on): each workload takes the database path
once and the cache refills. Until that drop nothing may be read from it: each read carries the
identity this process last checked, and the read script answers "restarted" instead of entries
when its server is not that one, so the first read after a restart is all misses and the next
one drops first. (The consumers' housekeeping checks too, for a process that reads little.)

Layout: the cache part of the workload's field in its registration bucket (keys.registration,
after the "/", keys.BUCKET_VALUE_LUA), one compact string,
`<version>|<expires>|<state>|<generation>|<kind code>|<seq>|<refused,...>` (a tombstone has only
the first two; the seq "=" when it equals the registration's, keys.BUCKET_VALUE_LUA), ~35 bytes:
small buckets of short values stay listpacks (docs/benchmarks.md). Every
script here keeps the registration part as it found it. A hash
field has no TTL of its own, so the expiry (unix seconds, Redis's clock) is in the value: every
script and the reader treat an expired entry exactly as a missing one, and the consumers'
housekeeping prunes expired entries (`prune`) a few buckets at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis

from statusd.keys import BUCKET_VALUE_LUA, Keys
from statusd.lifecycle import Kind, State
from statusd.redis_runtime import Script, run_queued, server_identity

log = structlog.get_logger("statusd.consumer")

RESTARTED = "Redis restarted: the cache may have lost its last writes"

# Entries expire so a cache that missed an update (Redis blip between commit and write-back)
# heals by itself; a heartbeat after expiry just takes the database path once.
CACHE_TTL_S = 3600
# Long enough for the commit and its write-back; short, because a rolled-back change leaves it.
TOMBSTONE_TTL_S = 60

# Shared by the writers: an entry as a table (nil when absent, malformed or expired), and back.
_LUA_ENTRY = (
    BUCKET_VALUE_LUA
    + """
local now = tonumber(redis.call('TIME')[1])
local function decode(value)
  if value == '' then return nil end
  local version, expires, state, gen, kind, seq, refused = string.match(value,
    '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if not version or (tonumber(expires) or 0) <= now then return nil end
  return {version = version, expires = expires, state = state, gen = gen, kind = kind,
          seq = seq, refused = refused}
end
local function encode(e)
  return table.concat({e.version, e.expires, e.state, e.gen, e.kind, e.seq, e.refused}, '|')
end
"""
)

# Every script takes the bucket keys of ONE shard (one slot) and per item a group whose first
# value is the KEYS index of the item's bucket, the second its workload id: as ARGV groups, or, in
# the two scripts a consumer runs for every batch (get, bump), as one JSON array of groups in
# ARGV[1], numbers as strings (one argument: redis-py packs each argument in Python, ~2 us each,
# a fifth of a consumer's CPU at 20,000 heartbeats/s when every item was 2-4 arguments).

# (bucket, id, state, version, generation, kind, ttl, seq or '')
_STORE_IF_NEWER = (
    _LUA_ENTRY
    + """
for i = 1, #ARGV, 8 do
  local key, id, version = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 3]
  local cur = redis.call('HGET', key, id)
  local reg, cache = split_value(cur)
  local e = decode(cache)
  if not (e and tonumber(e.version) > tonumber(version)) then
    if not e or tonumber(e.version) < tonumber(version) then e = {seq = '', refused = ''} end
    e.state, e.version, e.gen, e.kind = ARGV[i + 2], version, ARGV[i + 4], ARGV[i + 5]
    e.expires = now + tonumber(ARGV[i + 6])
    local seq = ARGV[i + 7]
    if seq ~= '' and (e.seq == '' or tonumber(e.seq) < tonumber(seq)) then e.seq = seq end
    put_value(key, id, reg, encode(e), cur)
  end
end
return 1
"""
)

# (bucket, id, version, ttl): replaces whatever is there.
_TOMBSTONE = (
    BUCKET_VALUE_LUA
    + """
local now = tonumber(redis.call('TIME')[1])
for i = 1, #ARGV, 4 do
  local key, id = KEYS[tonumber(ARGV[i])], ARGV[i + 1]
  local cur = redis.call('HGET', key, id)
  local reg = split_value(cur)
  local expires = now + tonumber(ARGV[i + 3])
  put_value(key, id, reg, ARGV[i + 2] .. '|' .. expires .. '|||||', cur)
end
return 1
"""
)

# Consumers skip steady heartbeats without the database, so the newest seq they handled lives
# here too; otherwise a late, older report could reach the database and win over a newer one.
# JSON [bucket, id, generation, seq]: only into a live entry of that generation; keeps its expiry.
_BUMP_SEQS = (
    _LUA_ENTRY
    + """
for _, item in ipairs(cjson.decode(ARGV[1])) do
  local key, id = KEYS[item[1]], item[2]
  local cur = redis.call('HGET', key, id)
  local reg, cache = split_value(cur)
  local e = decode(cache)
  if e and e.gen == item[3] and (e.seq == '' or tonumber(e.seq) < tonumber(item[4])) then
    e.seq = item[4]
    put_value(key, id, reg, encode(e), cur)
  end
end
return 1
"""
)

# After a batch, in the consumers' ack: JSON [bucket, id, seq, generation or '']. Raises the
# registration's newest seq (never backward; statusd.liveness.RAISE_SCRIPT's rule) and, with a
# generation, the seq of a live cache entry of that generation (`bump_seqs`' rule): both parts of
# one field, one read and at most one write per workload.
_RECORD_SEQS = (
    _LUA_ENTRY
    + """
for _, item in ipairs(cjson.decode(ARGV[1])) do
  local key, id, seq, gen = KEYS[item[1]], item[2], item[3], item[4]
  local cur = redis.call('HGET', key, id)
  local reg, cache = split_value(cur)
  local g, s = '', ''
  if reg ~= '' then g, s = string.match(reg, '^([^|]*)|?(.*)$') end
  if s == '' or tonumber(s) < tonumber(seq) then s = seq end
  local e = decode(cache)
  if e and gen ~= '' and e.gen == gen and (e.seq == '' or tonumber(e.seq) < tonumber(seq)) then
    e.seq = seq
    cache = encode(e)
  end
  put_value(key, id, g .. '|' .. s, cache, cur)
end
return 1
"""
)

# (bucket, id, version, requested state): only at the entry's version (a tombstone's too).
_MARK_REFUSED = (
    _LUA_ENTRY
    + """
for i = 1, #ARGV, 4 do
  local key, id, requested = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 3]
  local cur = redis.call('HGET', key, id)
  local reg, cache = split_value(cur)
  local e = decode(cache)
  if e and tonumber(e.version) == tonumber(ARGV[i + 2])
      and not string.find(',' .. e.refused .. ',', ',' .. requested .. ',', 1, true) then
    e.refused = (e.refused == '') and requested or (e.refused .. ',' .. requested)
    put_value(key, id, reg, encode(e), cur)
  end
end
return 1
"""
)

# JSON [bucket, id]: the raw cache parts (false when none), after Redis's clock (the reader judges
# expiry by it).
# ARGV[2]: the server identity this process checked (`forget_if_restarted`); a server that is not
# in it (restarted, or a replica promoted in its place) answers {'restarted'} and no entry.
_GET_MANY = (
    BUCKET_VALUE_LUA
    + """
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
if not run_id or not string.find(ARGV[2], run_id, 1, true) then return {'restarted'} end
local out = {redis.call('TIME')[1]}
for _, item in ipairs(cjson.decode(ARGV[1])) do
  local _, cache = split_value(redis.call('HGET', KEYS[item[1]], item[2]))
  out[#out + 1] = cache ~= '' and cache
end
return out
"""
)

# KEYS: buckets; drops every expired entry (tombstones included), or every entry when ARGV[1] is
# 'all', keeping the registration part; returns how many.
_PRUNE = (
    BUCKET_VALUE_LUA
    + """
local now = tonumber(redis.call('TIME')[1])
local pruned = 0
for _, key in ipairs(KEYS) do
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local reg, cache = split_value(fields[i + 1])
    if cache ~= '' then
      local expires = string.match(cache, '^[^|]*|([^|]*)|')
      if ARGV[1] == 'all' or (tonumber(expires) or 0) <= now then
        put_value(key, fields[i], reg, '', fields[i + 1])
        pruned = pruned + 1
      end
    end
  end
end
return pruned
"""
)
# Buckets the consumers' housekeeping prunes per owned shard per pass (STATUSD_CONSUMER_HOUSEKEEPING_S,
# 5 s): 256 buckets per shard are all visited every ~80 s, each pass reading ~16 x 50 fields at
# 200k workloads. Expired entries only cost memory meanwhile; they are never read as live.
PRUNE_BUCKETS_PER_PASS = 16

_Call = tuple[
    list[str], list[list[Any]]
]  # one script call: its bucket KEYS (one shard), its groups


@dataclass(frozen=True, slots=True)
class CachedState:
    state: State
    version: int
    generation: int
    kind: Kind
    refused: frozenset[str]  # reported states already refused at this version
    seq: int | None = None  # newest seq handled for this generation (applied, unchanged or skipped)

    def makes_no_change(self, reported: str, generation: int, seq: int | None = None) -> bool:
        """True when applying `reported` could not change anything (skip the database): the same
        state, a state already refused at this version, or a seq not newer than one handled."""
        if generation != self.generation:
            return False
        if seq is not None and self.seq is not None and seq <= self.seq:
            return True
        return reported == self.state.value or reported in self.refused


class StateCache:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        ttl_s: int = CACHE_TTL_S,
        tombstone_ttl_s: int = TOMBSTONE_TTL_S,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s  # the lifetimes: tests shorten them to see expiry without waiting
        self._tombstone_ttl_s = tombstone_ttl_s
        self._store = Script(redis, _STORE_IF_NEWER)
        self._refuse = Script(redis, _MARK_REFUSED)
        self._bump = Script(redis, _BUMP_SEQS)
        self._tombstone = Script(redis, _TOMBSTONE)
        self._get = Script(redis, _GET_MANY)
        self._prune = Script(redis, _PRUNE)
        self._record = Script(redis, _RECORD_SEQS)
        self._prune_next: dict[int, int] = {}  # shard -> the next bucket `prune` visits
        # The server identity `forget_if_restarted` last found the cache trustworthy on; None
        # until it has run, and again once a read found another server.
        self._checked: str | None = None

    async def get_many(self, workload_ids: Iterable[str]) -> dict[str, CachedState]:
        """The live entries of `workload_ids` (absent, expired and tombstones are misses): one
        script call per shard, pipelined, each answering one string per id."""
        calls = self._calls([(wid,) for wid in workload_ids])
        if not calls:
            return {}
        if self._checked is None and await self.forget_if_restarted():
            log.warning("consumer.cache_dropped", reason=RESTARTED)
        checked = self._checked or ""

        def fill(pipe: Any) -> None:
            for keys, items in calls:
                self._get.queue(pipe, keys, [orjson.dumps(items), checked])

        replies = await run_queued(self._redis, [self._get], fill)
        if any(reply[0] in (b"restarted", "restarted") for reply in replies):
            self._checked = None  # the next read drops the cache first
            return {}
        out: dict[str, CachedState] = {}
        for (_, items), reply in zip(calls, replies, strict=True):
            now = int(reply[0])
            for (_, wid), value in zip(items, reply[1:], strict=True):
                if value is not None and (parsed := _parse(value, now)) is not None:
                    out[wid] = parsed
        return out

    async def invalidate(self, workload_id: str, next_version: int) -> None:
        """Before a state-changing commit: drop the entry, leaving a tombstone at the version
        about to be written, so a slower writer's store of an older version cannot bring the old
        state back before the commit's own store lands (a tombstone has no state: a miss)."""
        await self.invalidate_many({workload_id: next_version})

    async def store(
        self,
        workload_id: str,
        state: State,
        version: int,
        generation: int,
        kind: Kind,
        seq: int | None = None,
    ) -> None:
        await self.store_many([(workload_id, state, version, generation, kind, seq)])

    async def invalidate_many(self, next_versions: dict[str, int]) -> None:
        """`invalidate` for a batch about to commit {id: version it writes}: one round trip."""
        items = [(wid, version, self._tombstone_ttl_s) for wid, version in next_versions.items()]
        await self._run((self._tombstone, self._calls(items)))

    async def store_many(
        self,
        entries: Sequence[tuple[str, State, int, int, Kind, int | None]],
        refused: Sequence[tuple[str, int, str]] = (),
    ) -> None:
        """After a batch's commit, one round trip: `store` each (id, state, version, generation,
        kind, seq), then `mark_refused` each (id, version, requested state)."""
        stores = [
            (wid, state.value, version, generation, _KIND_CODES[kind], self._ttl_s, _opt(seq))
            for wid, state, version, generation, kind, seq in entries
        ]
        await self._run((self._store, self._calls(stores)), (self._refuse, self._calls(refused)))

    async def bump_seqs(self, newest: dict[str, tuple[int, int]], client: Any = None) -> None:
        """Record the newest handled seq per workload {id: (generation, seq)}, never backward, only
        into an entry of the same generation. `client` may be a pipeline (the consumers' ack)."""
        items = [(wid, str(generation), str(seq)) for wid, (generation, seq) in newest.items()]
        for keys, groups in self._calls(items):
            await self._bump(keys=keys, args=[orjson.dumps(groups)], client=client)

    def queue_record_seqs(self, pipe: Any, newest: Mapping[str, tuple[int, int | None]]) -> None:
        """Queue on `pipe` (run it with `run_queued(..., self.record_scripts, ...)`): for each
        {id: (seq, generation or None)}, the registration's newest seq raised and, with a
        generation, the cached entry's seq bumped as `bump_seqs` does; one call per shard."""
        items = [
            (wid, str(seq), "" if generation is None else str(generation))
            for wid, (seq, generation) in newest.items()
        ]
        for keys, groups in self._calls(items):
            self._record.queue(pipe, keys, [orjson.dumps(groups)])

    @property
    def record_scripts(self) -> list[Script]:
        """The scripts `queue_record_seqs` queues (loaded on NOSCRIPT by `run_queued`)."""
        return [self._record]

    async def mark_refused(self, workload_id: str, version: int, requested: str) -> None:
        await self._run((self._refuse, self._calls([(workload_id, version, requested)])))

    async def forget_if_restarted(self) -> bool:
        """Drop every entry when Redis is not the server (run) the cache was filled on; True if
        it dropped them. No identity recorded yet is a Redis that never had one (a new install, or
        one restarted empty: no entry to distrust), so it is only recorded. After a drop the
        identity is recorded last: a process stopped between the two leaves the next check to
        drop again."""
        current = await server_identity(self._redis)
        raw = await self._redis.get(self._keys.state_cache_server)
        known = raw.decode() if isinstance(raw, bytes) else raw
        if known == current:
            self._checked = current
            return False
        if known is not None:
            # The cache parts only: each shard's buckets in one call (they share its slot).
            everything = range(self._keys.buckets)
            for shard in range(self._keys.shards):
                keys = [self._keys.registration(shard, b) for b in everything]
                await self._prune(keys=keys, args=["all"])
        await self._redis.set(self._keys.state_cache_server, current)
        self._checked = current
        return known is not None

    async def prune(self, shard: int, buckets: int = PRUNE_BUCKETS_PER_PASS) -> int:
        """Delete the expired entries of the next `buckets` buckets of `shard` (round robin, so
        repeated calls visit them all); returns how many were deleted."""
        total = self._keys.buckets
        first = self._prune_next.get(shard, 0)
        visit = [(first + i) % total for i in range(min(buckets, total))]
        self._prune_next[shard] = (first + len(visit)) % total
        keys = [self._keys.registration(shard, b) for b in visit]
        return int(await self._prune(keys=keys, args=[]))

    def _calls(self, items: Iterable[Sequence[Any]]) -> list[_Call]:
        """One script call per shard: (its bucket KEYS, groups [KEYS index, *item])."""
        by_shard: dict[int, tuple[dict[str, int], list[list[Any]]]] = {}
        for item in items:
            shard, bucket = self._keys.bucket(item[0])
            keys, groups = by_shard.setdefault(shard, ({}, []))
            key = self._keys.registration(shard, bucket)
            groups.append([keys.setdefault(key, len(keys) + 1), *item])
        return [(list(keys), groups) for keys, groups in by_shard.values()]

    @staticmethod
    def _flat(groups: list[list[Any]]) -> list[Any]:
        """A call's groups as ARGV (the scripts that take arguments, not JSON)."""
        return [value for group in groups for value in group]

    async def _run(self, *work: tuple[Script, list[_Call]]) -> None:
        """Each (script, its calls), in order, in one round trip."""
        if not any(calls for _, calls in work):
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, calls in work:
                for keys, groups in calls:
                    await script(keys=keys, args=self._flat(groups), client=pipe)
            await pipe.execute()


# The kind as one letter in the entry: it shares a 64-byte listpack value with the registration.
_KIND_CODES = {Kind.TRAINING: "t", Kind.NOTEBOOK: "n", Kind.DEPLOYMENT: "d"}
_KINDS = {code: kind for kind, code in _KIND_CODES.items()}


def _opt(n: int | None) -> int | str:
    return "" if n is None else n


def _parse(value: bytes | str, now: int) -> CachedState | None:
    """A live entry, or None (a tombstone, expired, or not understood: all misses)."""
    text = value.decode() if isinstance(value, bytes) else value
    parts = text.split("|")
    if len(parts) != 7 or not parts[2]:
        return None
    version, expires, state, generation, kind, seq, refused = parts
    try:
        if int(expires) <= now:
            return None
        return CachedState(
            state=State(state),
            version=int(version),
            generation=int(generation),
            kind=_KINDS[kind] if kind in _KINDS else Kind(kind),
            seq=int(seq) if seq else None,
            refused=frozenset(refused.split(",")) if refused else frozenset(),
        )
    except ValueError:
        return None
