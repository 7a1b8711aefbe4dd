"""Per-workload poll leases in Redis: one poller per workload, at most one poll per sweep interval.

A lease is `SET lease:poll:<id> <token> NX PX ttl`. The sweep takes it when it enqueues a workload
(so a second beat, or an overlapping sweep, cannot enqueue the same workload again while the first
poll is queued or running) and hands the token to the `poll` task. The task confirms it still holds
the lease before polling, and afterwards does not simply delete it: it keeps it until one sweep
interval (x `statusd.celery.budgets.HOLD_FRACTION`) after the poll started. So whatever the number of beats, sweeps or
workers, two polls of one workload start at least that far apart. The TTL is short
(`statusd.celery.budgets.POLL_LEASE_MIN_S`) and a running poll renews its leases every third of it
(`LeaseRenewal`): a worker that dies holding leases, or a release that fails while Redis is away,
holds the workloads back one short TTL at most (a redelivery keeps them: same run token).

Taking queued polls: a sweep with several chunks also lists its leased ids in a queue
(`Keys.poll_queue`). A running poll task holds its leases under its own run token (the sweep token
+ its task id). While it has free slots (its chunk down to its stragglers) it takes ids whose
lease still holds the bare sweep token, i.e. queued and not started by anyone, from that queue
(`take_queued`), switching those leases to its run token and marking them taken for the sweep
(`Keys.poll_claimed_elsewhere`). A chunk's own task then confirms only what still holds the sweep token or its
own run token, never an id taken by another, so no workload is polled twice. Every id stays in
exactly one Celery message; a task killed mid-run is redelivered with the same task id, so its run
token and the ids it took (`Keys.poll_run_ids`) come back with it and nothing it held is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence

import structlog
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from statusd.keys import Keys
from statusd.redis_runtime import Script

log = structlog.get_logger("statusd.sweeper")

# KEYS[1] = the sweep's taken set, KEYS[2..] = lease keys; ARGV[1] = sweep token, ARGV[2] = run
# token, ARGV[3] = ttl ms, ARGV[4..] = the ids of KEYS[2..]. Returns 1/0 per lease key: held by
# this run now (queued under the sweep token, already ours, or expired while queued; not one
# another task took and has released since).
_CONFIRM = """
local out = {}
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v == ARGV[1] or v == ARGV[2]
     or ((not v) and redis.call('SISMEMBER', KEYS[1], ARGV[i + 2]) == 0) then
    redis.call('SET', KEYS[i], ARGV[2], 'PX', ARGV[3])
    out[i - 1] = 1
  else
    out[i - 1] = 0
  end
end
return out
"""

# KEYS[1] = the sweep's taken set, KEYS[2] = the run's took set, KEYS[3..] = lease keys;
# ARGV[1] = sweep token, ARGV[2] = run token, ARGV[3] = ttl ms, ARGV[4..] = the ids of KEYS[3..].
# Only a lease still queued under the bare sweep token is taken: an absent one was released (or
# expired: the next sweep has it), any other value is a run polling it.
_TAKE = """
local out = {}
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('SET', KEYS[i], ARGV[2], 'PX', ARGV[3])
    redis.call('SADD', KEYS[1], ARGV[i + 1])
    redis.call('SADD', KEYS[2], ARGV[i + 1])
    out[#out + 1] = ARGV[i + 1]
  end
end
if #out > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return out
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def run_token(sweep_token: str, run_id: str) -> str:
    """The token a poll task's leases hold while it runs: its sweep's token + its own id (the
    Celery task id, which a redelivery keeps)."""
    return f"{sweep_token}/{run_id}"


async def confirm(
    redis: Redis, keys: Keys, ids: Sequence[str], token: str, ttl_ms: int, run: str
) -> list[str]:
    """The ids this run now holds (TTL refreshed): its own chunk's ids still queued under the
    sweep `token` (or retaken when they expired unclaimed), plus those an earlier delivery of it
    took (`Keys.poll_run_ids`); an id another run took is not ours, even once released."""
    took = sorted(_text(w) for w in await redis.smembers(keys.poll_run_ids(run)))
    ids = list(dict.fromkeys([*ids, *took]))
    if not ids:
        return []
    leased = [keys.poll_lease(w) for w in ids]
    flags = await Script(redis, _CONFIRM)(
        keys=[keys.poll_claimed_elsewhere(token), *leased], args=[token, run, ttl_ms, *ids]
    )
    return [wid for wid, ok in zip(ids, flags, strict=True) if int(ok) == 1]


async def queue(redis: Redis, keys: Keys, ids: Sequence[str], token: str, ttl_ms: int) -> None:
    """List a sweep's leased ids for poll tasks with free slots to take (`take_queued`)."""
    if not ids:
        return
    key = keys.poll_queue(token)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.rpush(key, *ids)
        pipe.pexpire(key, ttl_ms)
        await pipe.execute()


async def take_queued(
    redis: Redis, keys: Keys, token: str, run: str, count: int, ttl_ms: int
) -> tuple[list[str], bool]:
    """Take up to `count` ids of sweep `token` that no task has started yet, for run `run`.

    Pops from the queue's tail: the chunks whose own tasks come last. Returns the ids taken and
    whether the queue is empty now (nothing more will ever be taken from it)."""
    key = keys.poll_queue(token)
    out: list[str] = []
    while len(out) < count:
        raw: list[bytes | str] | None = await redis.rpop(key, count - len(out))  # type: ignore[assignment]
        if not raw:
            return out, True
        popped = [_text(w) for w in raw]
        leased = [keys.poll_lease(w) for w in popped]
        sets = (keys.poll_claimed_elsewhere(token), keys.poll_run_ids(run))
        got = await Script(redis, _TAKE)(keys=[*sets, *leased], args=[token, run, ttl_ms, *popped])
        out.extend(_text(w) for w in got)
    return out, False


async def forget_taken(redis: Redis, keys: Keys, run: str) -> None:
    """The run is over (its leases released): a redelivery has nothing of it to redo."""
    await redis.delete(keys.poll_run_ids(run))


async def release(
    redis: Redis, keys: Keys, ids: Sequence[str], token: str, keep_ms: int = 0
) -> int:
    """Give back our leases; with `keep_ms` > 0 they stay (as a cool-down) that much longer."""
    return await release_each(redis, keys, dict.fromkeys(ids, keep_ms), token)


class SweepLock:
    """The sweep lock this sweep holds, its TTL renewed in the background until `release`."""

    def __init__(self, lock: Lock, ttl_s: float) -> None:
        self._lock = lock
        self._ttl_s = ttl_s
        self._renewal = asyncio.create_task(_renew(lock, ttl_s / 3))

    async def release(self) -> None:
        """Stop renewing and give the lock back; if Redis is away, it expires within its TTL."""
        self._renewal.cancel()
        await asyncio.gather(self._renewal, return_exceptions=True)
        try:
            await self._lock.release()
        except (LockError, RedisError) as exc:
            log.warning(
                "sweep.lock_release_failed",
                error=f"{type(exc).__name__}: {exc}",
                expires_in_s=self._ttl_s,
            )


async def take_sweep_lock(redis: Redis, keys: Keys, token: str, ttl_ms: int) -> SweepLock | None:
    """One sweep at a time: a second beat's sweep returns at once instead of loading rows twice.

    The lock is redis-py's `Lock` (token compared in Lua) with a short TTL, renewed every third
    of it while the sweep runs: a sweep cut off before its release (its worker killed, or Redis
    gone at the release and back with its data) holds the next sweeps back for one TTL at most,
    never for the sweep's whole time limit. None when another sweep holds it."""
    ttl_s = ttl_ms / 1000
    lock = redis.lock(keys.sweep_lock, timeout=ttl_s, blocking=False, thread_local=False)
    if not await lock.acquire(token=token):
        return None
    return SweepLock(lock, ttl_s)


async def _renew(lock: Lock, every_s: float) -> None:
    """Reset the lock's TTL every `every_s` until cancelled; a failed renewal is retried at the
    next one (the TTL still has two of them left)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await lock.reacquire()
        except LockNotOwnedError:
            log.warning("sweep.lock_lost")  # expired meanwhile: a second sweep may run, harmless
            return
        except RedisError as exc:
            log.warning("sweep.lock_renewal_failed", error=f"{type(exc).__name__}: {exc}")


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


# KEYS: lease keys; ARGV[1] = token, ARGV[2] = ttl ms. Only our own leases get the new TTL.
_RENEW = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    n = n + 1
  end
end
return n
"""


async def renew(redis: Redis, keys: Keys, ids: Sequence[str], token: str, ttl_ms: int) -> int:
    """Reset the TTL of those leases in `ids` that `token` still holds; returns how many."""
    if not ids:
        return 0
    return int(
        await Script(redis, _RENEW)(keys=[keys.poll_lease(w) for w in ids], args=[token, ttl_ms])
    )


class LeaseRenewal:
    """A running poll's leases (`held`, which grows as the run takes queued polls), their TTL
    reset every third of it in the background until `stop`."""

    def __init__(
        self, redis: Redis, keys: Keys, held: Collection[str], token: str, ttl_ms: int
    ) -> None:
        self._task = asyncio.create_task(self._renew(redis, keys, held, token, ttl_ms))

    @staticmethod
    async def _renew(
        redis: Redis, keys: Keys, held: Collection[str], token: str, ttl_ms: int
    ) -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            try:
                await renew(redis, keys, list(held), token, ttl_ms)
            except RedisError as exc:  # the TTL has two renewals left: the next one may do
                log.warning("poll.lease_renewal_failed", error=f"{type(exc).__name__}: {exc}")

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def release_each(redis: Redis, keys: Keys, keep_ms: Mapping[str, int], token: str) -> int:
    """Give back our leases, each kept (as a cool-down) its own number of ms longer."""
    if not keep_ms:
        return 0
    ids = list(keep_ms)
    return int(
        await Script(redis, _RELEASE_EACH)(
            keys=[keys.poll_lease(w) for w in ids], args=[token, *[keep_ms[w] for w in ids]]
        )
    )
