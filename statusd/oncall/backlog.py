"""How far behind the pipelines are: Celery queue depths (Redis or RabbitMQ); the heartbeat stream's
lag is summed over its shards by statusd.ingest.streams.stream_stats.

These are the scale-out signals: `lag` grows when consumers cannot keep up with ingest, a Celery
queue grows when workers cannot keep up with sweeps, polls or syncs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from statusd.celery.names import QUEUES
from statusd.errors import ConfigError
from statusd.redis_runtime import create_redis


async def celery_queue_depths(broker: Redis, queues: tuple[str, ...] = QUEUES) -> dict[str, int]:
    """Messages waiting per Celery queue on a Redis broker (kombu keeps each queue in a list)."""
    async with broker.pipeline(transaction=False) as pipe:
        for name in queues:
            pipe.llen(name)
        depths = await pipe.execute()
    return {name: int(depth) for name, depth in zip(queues, depths, strict=True)}


AMQP_TIMEOUT_S = 5.0  # a scrape must not hang on a broker that does not answer


def amqp_queue_depths(url: str, queues: tuple[str, ...] = QUEUES) -> dict[str, int]:
    """Messages ready per Celery queue on a RabbitMQ broker (a passive declare reports the count;
    a queue no worker declared yet counts 0). Blocking: run it in a thread."""
    from amqp.exceptions import NotFound
    from kombu.connection import Connection

    depths: dict[str, int] = {}
    with Connection(url, connect_timeout=AMQP_TIMEOUT_S) as conn:  # type: ignore[no-untyped-call]
        conn.ensure_connection(max_retries=1)
        for name in queues:
            channel = conn.channel()
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except NotFound:  # the broker closes the channel on a missing queue
                depths[name] = 0
            finally:
                channel.close()
    return depths


async def broker_queue_depths(runtime: Any) -> dict[str, int] | None:
    """Celery queue depths on the broker (Redis or RabbitMQ); None for another transport."""

    try:
        url = runtime.settings.effective_broker_url
    except ConfigError:
        url = None
    if url is None or url == runtime.settings.redis_url:
        return await celery_queue_depths(runtime.redis)
    if url.startswith(("amqp://", "amqps://", "pyamqp://")):
        return await asyncio.to_thread(amqp_queue_depths, url)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    broker = create_redis(url, 2)
    try:
        return await celery_queue_depths(broker)
    finally:
        await broker.aclose()
