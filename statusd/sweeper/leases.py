"""Per-workload poll leases in Redis: one poller per workload, at most one poll per sweep interval.

A lease is `SET lease:poll:<id> <token> NX PX ttl`. The sweep takes it when it enqueues a workload
(so a second beat, or an overlapping sweep, cannot enqueue the same workload again while the first
poll is queued or running) and hands the token to the `poll` task. The task confirms it still holds
the lease before polling, and afterwards does not simply delete it: it keeps it until one sweep
interval (x `HOLD_FRACTION`) after the poll started. So whatever the number of beats, sweeps or
workers, two polls of one workload start at least that far apart; a worker that dies holding
leases loses them when the TTL runs out (or keeps them through redelivery: same token).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from statusd.keys import Keys

# Kept below 1 so a beat that fires a few ms early is not refused a workload it should poll.
HOLD_FRACTION = 0.9

# KEYS: lease keys; ARGV[1] = token, ARGV[2] = ttl ms. Returns 1/0 per key: held by us now.
_CONFIRM = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  elseif not v then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS: lease keys; ARGV[1] = token, ARGV[2] = keep ms (<= 0: delete). Only our own leases.
_RELEASE = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    if tonumber(ARGV[2]) > 0 then
      redis.call('PEXPIRE', key, ARGV[2])
    else
      redis.call('DEL', key)
    end
    n = n + 1
  end
end
return n
"""


async def take(redis: Redis, keys: Keys, ids: Sequence[str], token: str, ttl_ms: int) -> list[str]:
    """Take the lease of each free workload in `ids` for `token`; return the ids taken."""
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for wid in ids:
            pipe.set(keys.poll_lease(wid), token, nx=True, px=ttl_ms)
        results = await pipe.execute()
    return [wid for wid, ok in zip(ids, results, strict=True) if ok]


async def confirm(
    redis: Redis, keys: Keys, ids: Sequence[str], token: str, ttl_ms: int
) -> list[str]:
    """The ids whose lease `token` holds (or retakes, when it expired unclaimed), TTL refreshed."""
    if not ids:
        return []
    flags = await redis.eval(_CONFIRM, len(ids), *[keys.poll_lease(w) for w in ids], token, ttl_ms)
    return [wid for wid, ok in zip(ids, flags, strict=True) if int(ok) == 1]


async def release(
    redis: Redis, keys: Keys, ids: Sequence[str], token: str, keep_ms: int = 0
) -> int:
    """Give back our leases; with `keep_ms` > 0 they stay (as a cool-down) that much longer."""
    if not ids:
        return 0
    return int(
        await redis.eval(_RELEASE, len(ids), *[keys.poll_lease(w) for w in ids], token, keep_ms)
    )


async def take_sweep_lock(redis: Redis, keys: Keys, token: str, ttl_ms: int) -> bool:
    """One sweep at a time: a second beat's sweep returns at once instead of loading rows twice."""
    return bool(await redis.set(keys.sweep_lock, token, nx=True, px=ttl_ms))


async def release_sweep_lock(redis: Redis, keys: Keys, token: str) -> None:
    await redis.eval(_RELEASE, 1, keys.sweep_lock, token, 0)


# KEYS: lease keys; ARGV[1] = token, ARGV[i + 1] = keep ms of KEYS[i] (<= 0: delete).
_RELEASE_EACH = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    if tonumber(ARGV[i + 1]) > 0 then
      redis.call('PEXPIRE', key, ARGV[i + 1])
    else
      redis.call('DEL', key)
    end
    n = n + 1
  end
end
return n
"""


async def release_each(redis: Redis, keys: Keys, keep_ms: Mapping[str, int], token: str) -> int:
    """Give back our leases, each kept (as a cool-down) its own number of ms longer."""
    if not keep_ms:
        return 0
    ids = list(keep_ms)
    return int(
        await redis.eval(
            _RELEASE_EACH,
            len(ids),
            *[keys.poll_lease(w) for w in ids],
            token,
            *[keep_ms[w] for w in ids],
        )
    )
