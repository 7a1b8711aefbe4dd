"""Liveness bookkeeping in Redis (no SQL on the hot path): who was seen when, who is still PENDING.

Ingest writes `last_seen` in the same pipeline as its XADD; the sweeper reads both sorted sets to
find stale workloads without scanning the SQL table.
"""

from __future__ import annotations

from enum import StrEnum

from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.lifecycle import FINAL_STATES, State


class StaleReason(StrEnum):
    LOST = "lost"
    UNREACHABLE = "unreachable"
    STALE = "stale"  # no sign of life within STATUSD_HEARTBEAT_TTL
    NEVER_SEEN = "never_seen"  # PENDING past STATUSD_START_TIMEOUT without any sign of life


def staleness(
    state: State,
    last_seen: float | None,
    registered_at: float,
    *,
    heartbeat_ttl: float,
    start_timeout: float,
    now: float,
) -> StaleReason | None:
    """Why a workload needs attention, or None. The one rule the API (`stale`), the stale report
    and the sweeper's Redis queries share; times are unix seconds.

    Final states expect no heartbeats. UNREACHABLE and LOST are no contact by definition. A seen
    workload is stale when its last sign of life is older than the TTL; one never seen counts
    from its registration against the start timeout (starting takes longer than a heartbeat).
    """
    if state in FINAL_STATES:
        return None
    if state is State.LOST:
        return StaleReason.LOST
    if state is State.UNREACHABLE:
        return StaleReason.UNREACHABLE
    if last_seen is not None:
        return StaleReason.STALE if now - last_seen > heartbeat_ttl else None
    return StaleReason.NEVER_SEEN if now - registered_at > start_timeout else None


async def on_registered(redis: Redis, keys: Keys, workload_id: str, at: float) -> None:
    """A new registration: PENDING from `at` (start-timeout clock); no sign of life yet."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.pending_since, {workload_id: at})
        pipe.zrem(keys.last_seen, workload_id)
        pipe.hdel(keys.last_seq, workload_id)
        pipe.delete(keys.state(workload_id))
        await pipe.execute()


async def forget(redis: Redis, keys: Keys, workload_id: str) -> None:
    """A deregistration: stop tracking liveness and drop the cached state."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(keys.pending_since, workload_id)
        pipe.zrem(keys.last_seen, workload_id)
        pipe.hdel(keys.last_seq, workload_id)
        pipe.delete(keys.state(workload_id))
        await pipe.execute()


async def mark_seen(
    redis: Redis, keys: Keys, workload_id: str, at: float, seq: int | None = None
) -> None:
    """A sign of life outside the ingest pipeline (a successful poll)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(keys.last_seen, {workload_id: at})
        pipe.zrem(keys.pending_since, workload_id)
        if seq is not None:
            pipe.hset(keys.last_seq, workload_id, seq)
        await pipe.execute()
