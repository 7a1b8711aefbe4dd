"""Liveness bookkeeping in Redis (no SQL on the hot path): who was seen when, who is still PENDING.

Ingest writes `last_seen` in the same pipeline as its XADD; the sweeper reads both sorted sets to
find stale workloads without scanning the SQL table.
"""

from __future__ import annotations

from redis.asyncio import Redis

from statusd.keys import Keys


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


async def seen_at(redis: Redis, keys: Keys, workload_id: str) -> tuple[float | None, int | None]:
    """Last sign of life (unix seconds) and newest observed seq, from Redis."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zscore(keys.last_seen, workload_id)
        pipe.hget(keys.last_seq, workload_id)
        score, seq = await pipe.execute()
    return (float(score) if score is not None else None, int(seq) if seq is not None else None)
