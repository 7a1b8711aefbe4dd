"""How far behind the pipelines are: Celery queue depths (Redis reads); the heartbeat stream's
lag is summed over its shards by statusd.ingest.streams.stream_stats.

These are the scale-out signals: `lag` grows when consumers cannot keep up with ingest, a Celery
queue grows when workers cannot keep up with sweeps, polls or syncs.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from statusd.sweeper.celery_app import QUEUES


async def celery_queue_depths(broker: Redis, queues: tuple[str, ...] = QUEUES) -> dict[str, int]:
    """Messages waiting per Celery queue on a Redis broker (kombu keeps each queue in a list)."""
    async with broker.pipeline(transaction=False) as pipe:
        for name in queues:
            pipe.llen(name)
        depths = await pipe.execute()
    return {name: int(depth) for name, depth in zip(queues, depths, strict=True)}


async def broker_queue_depths(runtime: Any) -> dict[str, int] | None:
    """Celery queue depths when the broker is Redis (None for RabbitMQ: use its own metrics)."""
    from statusd.errors import ConfigError
    from statusd.redis_runtime import create_redis

    try:
        url = runtime.settings.effective_broker_url
    except ConfigError:
        url = None
    if url is None or url == runtime.settings.redis_url:
        return await celery_queue_depths(runtime.redis)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    broker = create_redis(url, 2)
    try:
        return await celery_queue_depths(broker)
    finally:
        await broker.aclose()
