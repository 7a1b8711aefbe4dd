"""One beat schedules at a time: Celery beat sends only while it holds a Redis lease.

Why: a second beat (two replicas by mistake, a rolling update that overlaps old and new pods, a
`worker --beat` left on) would send every sweep and every outbox drain twice. The poll leases
already keep double sweeps from polling a workload twice, but they still double the sweep load;
with this lease a second beat is a hot standby that costs one Redis call every few seconds.

How:
- The lease is `keys.beat_leader`, a string holding the leader's name (host:pid:random, so
  `GET` tells an operator who leads), taken with SET NX PX and renewed / released only while
  it still holds our token: redis-py's `Lock` does exactly that (token compared in Lua).
- Fencing, the same rule as the stream-shard leases (statusd.ingest.leases): the leader trusts
  its lease only until the start of its last successful renewal + ttl - margin (a third of the
  ttl), on the local monotonic clock. A leader that stalled (GC pause, SIGSTOP, lost network)
  sends nothing once that deadline passed; to send again it must renew, which fails if another
  beat took over meanwhile. The deadline is checked at each tick and again right before each
  send; what is left is a pause of more than the margin between that check and the send a few
  microseconds later: then one message can still go out late. Sweeps and
  drains are idempotent (poll leases, outbox claims), so the worst case is one extra sweep.
- The leader renews every third of the ttl; a standby tries to take the lease every sixth, so
  it takes over at most ttl + ttl/6 after the leader's last renewal (SIGKILL, node lost), and
  at its next try after a clean stop, which releases the lease.
- `LeaderScheduler` is the PersistentScheduler with that check in front of every tick; the
  Celery app names it as `beat_scheduler`, so `statusd beat`, `statusd worker --beat` and
  `celery beat` all use it.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import Any

import redis as redis_sync
import structlog
from celery.beat import PersistentScheduler
from redis.exceptions import LockError, RedisError
from redis.lock import Lock

from statusd.celery import worker_runtime
from statusd.keys import Keys
from statusd.redis_runtime import open_sync_redis
from statusd.runtime import redis_url_or_fail
from statusd.settings import Settings

log = structlog.get_logger("statusd.beat")

# Connections of the lease client: one is in use at a time (beat ticks in one thread).
LEASE_REDIS_CONNECTIONS = 2


class BeatLeadership:
    """Take, renew, fence and release the beat lease for one beat process."""

    def __init__(self, redis: redis_sync.Redis, keys: Keys, ttl_ms: int) -> None:
        self.name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.ttl_s = ttl_ms / 1000
        self._lock = Lock(
            redis, keys.beat_leader, timeout=self.ttl_s, blocking=False, thread_local=False
        )
        self._deadline = 0.0  # monotonic; we may send until then
        self._renew_at = 0.0  # monotonic; next renewal (leader) or next try (standby)
        self.leading = False

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 3

    @property
    def standby_every_s(self) -> float:
        return self.ttl_s / 6

    def may_send(self) -> bool:
        """Whether the lease, as last renewed, still covers a send now (no Redis call)."""
        return time.monotonic() < self._deadline

    def hold(self) -> bool:
        """True when this beat leads and may send now (renewing or taking the lease when due)."""
        now = time.monotonic()
        if now < self._renew_at and self.may_send():
            return True
        if now < self._renew_at and not self.leading:
            return False
        started = time.monotonic()
        try:
            if self.leading:
                self._lock.reacquire()
                ok = True
            else:
                ok = bool(self._lock.acquire(token=self.name))
        except LockError:  # the lease is someone else's now (we stalled past its ttl)
            ok = False
        except RedisError as exc:
            # Keep what we have: the deadline still fences us if Redis stays away.
            log.warning("beat.lease_unreachable", error=f"{type(exc).__name__}: {exc}")
            self._renew_at = time.monotonic() + self.standby_every_s
            return self.may_send()
        if ok:
            self._deadline = started + self.ttl_s - self.ttl_s / 3
            self._renew_at = started + self.renew_every_s
            if not self.leading:
                log.info("beat.leader_acquired", leader=self.name, ttl_s=self.ttl_s)
            self.leading = True
        else:
            if self.leading:
                log.warning("beat.leader_lost", leader=self.name)
            elif self._renew_at == 0.0:
                log.info("beat.standby", name=self.name, ttl_s=self.ttl_s)
            self.leading = False
            self._deadline = 0.0
            self._renew_at = started + self.standby_every_s
        return self.may_send()

    def next_check_s(self) -> float:
        """Seconds until `hold` has work to do (renew, or try again as standby)."""
        return max(0.0, self._renew_at - time.monotonic())

    def release(self) -> None:
        """Give the lease up (clean stop), so the standby need not wait for the ttl."""
        if not self.leading:
            return
        self.leading = False
        self._deadline = 0.0
        try:
            self._lock.release()
            log.info("beat.leader_released", leader=self.name)
        except (LockError, RedisError) as exc:  # gone already: it expires by itself
            log.warning("beat.release_failed", error=f"{type(exc).__name__}: {exc}")


def leadership_for(settings: Settings) -> BeatLeadership:
    """The lease client for these settings (its own small pool: beat has no Runtime)."""
    url = redis_url_or_fail(settings)
    timeout_s = settings.beat_lease_ms / 3000  # a renewal slower than the margin is useless
    client = open_sync_redis(settings, url, LEASE_REDIS_CONNECTIONS, socket_timeout=timeout_s)
    return BeatLeadership(
        client, Keys(settings.redis_prefix, settings.stream_shards), settings.beat_lease_ms
    )


class LeaderScheduler(PersistentScheduler):  # type: ignore[misc]  # celery ships no types
    """Celery's persistent beat scheduler, sending only while this beat holds the beat lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # create_celery(settings) handed this process its settings (the composition root).
        self.leadership = leadership_for(worker_runtime.settings())
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.leadership.hold():
            return self.leadership.next_check_s()
        due_in = float(super().tick(*args, **kwargs))
        # Wake up in time to renew even when the next entry is far off.
        return min(due_in, self.leadership.next_check_s())

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        # The deadline once more, right before the send: a stall inside the tick (between `hold`
        # and here: the schedule's bookkeeping) must not send on a lease that passed meanwhile.
        if self.leadership.may_send():
            super().apply_entry(entry, producer=producer)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.leadership.release()
