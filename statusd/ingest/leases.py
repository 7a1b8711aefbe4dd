"""Shard leases and the consumer registry: who alone applies a shard now, and how many share them.

A lease is a Redis string `SET key owner NX PX ttl`, renewed by compare-and-PEXPIRE and released
by compare-and-DEL (Lua, so a consumer never extends or deletes a lease someone else holds now).

Fencing: a holder trusts its lease only until `deadline` = start of its last successful renewal
+ ttl - margin, on the local monotonic clock. The renewal was sent before Redis set the expiry, so
the real expiry is never earlier than start + ttl; the margin (a third of the ttl) is the time one
commit may still take after its last check. A holder that cannot renew (Redis down, stalled
process, lease stolen) stops committing for that shard at the deadline, before anyone else can
acquire it. What is left in flight stays pending and is taken over by the next holder.
Each read of the shard also reads the key in the same round trip (statusd.ingest.shard_loop): a
holder that finds another name there, or none, leaves the shard at once rather than at its
renewal.

A restarted server: the invariant above holds while Redis keeps each key to its expiry. A server
restarted empty, or from an AOF that missed the last second, can have lost a lease whose holder
still trusts it until its deadline, and a second consumer would find the shard free: two holders
applying one shard, a workload's older report committed after a newer one and dropped as stale.
So a consumer that has lived through a restart (the server is younger than it) acquires no free
lease until the server is a ttl old: every deadline of a lease granted before the restart has
passed by then. Leases whose keys survived are renewed as usual. A consumer started after the
server (a fresh deployment, `make run`) is not held back, nor one started in the restart's
first seconds (the uptime is coarse), nor does a replica promoted by Sentinel, up for long, hold
anyone back: those stay the documented window.

Balance: consumers register in a sorted set (score = Redis server time, so clocks of different
hosts do not matter); members silent for a lease ttl are pruned. Each consumer aims for
ceil(shards / live consumers) shards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from statusd.errors import StatusdError
from statusd.redis_runtime import Script

# Free, or still ours (our previous loop on this shard ended early, e.g. fenced by a slow renewal):
# take it. Anyone else's: leave it. Free on a server that may be younger than a ttl and certainly
# started after us (ARGV[3]: our age in ms; Redis's uptime is whole seconds, off by up to one
# either way): not yet (-1), see "A restarted server" above.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  local up = tonumber(string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)'))
  if up and (up - 1) * 1000 < tonumber(ARGV[2]) and (up + 1) * 1000 < tonumber(ARGV[3]) then
    return -1
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Register ARGV[1] as alive now, forget members silent for ARGV[2] ms, return how many are alive.
_CHECK_IN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZCARD', KEYS[1])
"""


class ServerTooYoung(StatusdError):
    """The Redis server restarted less than a lease ttl ago: free leases are not granted yet."""


@dataclass
class ShardLease:
    """One held lease and the local deadline until which its holder may commit."""

    key: str
    owner: str
    ttl_ms: int
    deadline: float = 0.0  # time.monotonic()

    @property
    def margin_s(self) -> float:
        return self.ttl_ms / 3000

    def valid(self) -> bool:
        """True while the holder may still commit (checked before every apply)."""
        return time.monotonic() < self.deadline

    def _renewed_at(self, started: float) -> None:
        self.deadline = started + self.ttl_ms / 1000 - self.margin_s

    def lose(self) -> None:
        self.deadline = 0.0


class LeaseBook:
    """Acquire, renew and release leases and check in, for one Redis client."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._born = time.monotonic()  # a server younger than this book restarted under it
        self._acquire = Script(redis, _ACQUIRE)
        self._renew = Script(redis, _RENEW)
        self._release = Script(redis, _RELEASE)
        self._check_in = Script(redis, _CHECK_IN)

    async def acquire(self, key: str, owner: str, ttl_ms: int) -> ShardLease | None:
        """The lease when it was free (or already ours), else None; ServerTooYoung when it is
        free on a server that restarted under us less than a ttl ago."""
        started = time.monotonic()
        age_ms = int((started - self._born) * 1000)
        got = await self._acquire(keys=[key], args=[owner, ttl_ms, age_ms])
        if got == -1:
            raise ServerTooYoung(key)
        if not got:
            return None
        lease = ShardLease(key, owner, ttl_ms)
        lease._renewed_at(started)
        return lease

    async def renew(self, leases: list[ShardLease]) -> list[bool]:
        """Extend every lease still ours (one pipeline); a lease found lost is marked so at once."""
        if not leases:
            return []
        started = time.monotonic()
        async with self._redis.pipeline(transaction=False) as pipe:
            for lease in leases:
                await self._renew(keys=[lease.key], args=[lease.owner, lease.ttl_ms], client=pipe)
            results = await pipe.execute()
        kept = []
        for lease, ok in zip(leases, results, strict=True):
            if ok:
                lease._renewed_at(started)
            else:
                lease.lose()
            kept.append(bool(ok))
        return kept

    async def release(self, lease: ShardLease) -> None:
        """Give the lease up, if it is still ours."""
        lease.lose()
        await self._release(keys=[lease.key], args=[lease.owner])

    async def check_in(self, registry: str, member: str, ttl_ms: int) -> int:
        """Register `member` as alive; how many consumers are alive (at least 1: us)."""
        return max(1, int(await self._check_in(keys=[registry], args=[member, ttl_ms])))

    async def check_out(self, registry: str, member: str) -> None:
        await self._redis.zrem(registry, member)
