"""Redis cache of each workload's current state, so consumers skip heartbeats that change nothing.

State and version are written by `statusd.transitions` alone: before a state-changing commit it
replaces the entry with a tombstone at the new version, and after the commit it writes the new
state, with a compare-on-version so a slow writer never puts an older state back. Consumers only
raise the entry's newest handled seq (`bump_seqs`); registration and deletion drop the entry. A
missing entry (or a tombstone) only means "ask the database"; it is never wrong, just absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.redis_runtime import Script

# Entries expire so a cache that missed an update (Redis blip between commit and write-back)
# heals by itself; a heartbeat after expiry just takes the database path once.
CACHE_TTL_S = 3600

_STORE_IF_NEWER = """
local v = redis.call('HGET', KEYS[1], 'version')
if v and tonumber(v) > tonumber(ARGV[2]) then return 0 end
if v and tonumber(v) < tonumber(ARGV[2]) then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'version', ARGV[2], 'generation', ARGV[3], 'kind', ARGV[4])
if ARGV[6] ~= '' then
  local cur = redis.call('HGET', KEYS[1], 'seq')
  if (not cur) or tonumber(cur) < tonumber(ARGV[6]) then redis.call('HSET', KEYS[1], 'seq', ARGV[6]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

_TOMBSTONE = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
# Long enough for the commit and its write-back; short, because a rolled-back change leaves it.
TOMBSTONE_TTL_S = 60

# Consumers skip steady heartbeats without the database, so the newest seq they handled lives
# here too; otherwise a late, older report could reach the database and win over a newer one.
_BUMP_SEQS = """
for i = 1, #KEYS do
  local gen = redis.call('HGET', KEYS[i], 'generation')
  if gen and gen == ARGV[2 * i - 1] then
    local cur = redis.call('HGET', KEYS[i], 'seq')
    if (not cur) or tonumber(cur) < tonumber(ARGV[2 * i]) then
      redis.call('HSET', KEYS[i], 'seq', ARGV[2 * i])
    end
  end
end
return 1
"""

_MARK_REFUSED = """
local v = redis.call('HGET', KEYS[1], 'version')
if v and tonumber(v) == tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'refused:' .. ARGV[2], ARGV[1])
  return 1
end
return 0
"""


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
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._store = Script(redis, _STORE_IF_NEWER)
        self._refuse = Script(redis, _MARK_REFUSED)
        self._bump = Script(redis, _BUMP_SEQS)
        self._tombstone = Script(redis, _TOMBSTONE)

    async def get_many(self, workload_ids: Iterable[str]) -> dict[str, CachedState]:
        ids = list(workload_ids)
        if not ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.hgetall(self._keys.state(wid))
            rows = await pipe.execute()
        out: dict[str, CachedState] = {}
        for wid, row in zip(ids, rows, strict=True):
            parsed = _parse(row)
            if parsed is not None:
                out[wid] = parsed
        return out

    async def invalidate(self, workload_id: str, next_version: int) -> None:
        """Before a state-changing commit: drop the entry, leaving a tombstone at the version
        about to be written, so a slower writer's store of an older version cannot bring the old
        state back before the commit's own store lands (a tombstone has no state: a miss)."""
        await self._tombstone(
            keys=[self._keys.state(workload_id)], args=[next_version, TOMBSTONE_TTL_S]
        )

    async def store(
        self,
        workload_id: str,
        state: State,
        version: int,
        generation: int,
        kind: Kind,
        seq: int | None = None,
    ) -> None:
        await self._store(
            keys=[self._keys.state(workload_id)],
            args=[
                state.value,
                version,
                generation,
                kind.value,
                CACHE_TTL_S,
                "" if seq is None else seq,
            ],
        )

    async def invalidate_many(self, next_versions: dict[str, int]) -> None:
        """`invalidate` for a batch about to commit {id: version it writes}: one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for wid, version in next_versions.items():
                await self._tombstone(
                    keys=[self._keys.state(wid)], args=[version, TOMBSTONE_TTL_S], client=pipe
                )
            await pipe.execute()

    async def store_many(
        self,
        entries: Sequence[tuple[str, State, int, int, Kind, int | None]],
        refused: Sequence[tuple[str, int, str]] = (),
    ) -> None:
        """After a batch's commit, one round trip: `store` each (id, state, version, generation,
        kind, seq), then `mark_refused` each (id, version, requested state)."""
        if not entries and not refused:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for wid, state, version, generation, kind, seq in entries:
                await self._store(
                    keys=[self._keys.state(wid)],
                    args=[
                        state.value,
                        version,
                        generation,
                        kind.value,
                        CACHE_TTL_S,
                        "" if seq is None else seq,
                    ],
                    client=pipe,
                )
            for wid, version, requested in refused:
                await self._refuse(
                    keys=[self._keys.state(wid)], args=[version, requested], client=pipe
                )
            await pipe.execute()

    async def bump_seqs(self, newest: dict[str, tuple[int, int]], client: Any = None) -> None:
        """Record the newest handled seq per workload {id: (generation, seq)}, never backward, only
        into an entry of the same generation. `client` may be a pipeline (the consumers' ack)."""
        if not newest:
            return
        keys = [self._keys.state(wid) for wid in newest]
        args = [x for generation, seq in newest.values() for x in (generation, seq)]
        await self._bump(keys=keys, args=args, client=client)

    async def mark_refused(self, workload_id: str, version: int, requested: str) -> None:
        await self._refuse(keys=[self._keys.state(workload_id)], args=[version, requested])


def _parse(row: dict[bytes | str, bytes | str]) -> CachedState | None:
    if not row:
        return None
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in row.items()
    }
    try:
        version = int(fields["version"])
        return CachedState(
            state=State(fields["state"]),
            version=version,
            generation=int(fields["generation"]),
            kind=Kind(fields["kind"]),
            seq=int(fields["seq"]) if fields.get("seq") else None,
            refused=frozenset(
                k[8:] for k, v in fields.items() if k.startswith("refused:") and v == str(version)
            ),
        )
    except (KeyError, ValueError):
        return None
