"""How far behind the pipelines are: heartbeat stream lag and Celery queue depths (Redis reads).

These are the scale-out signals: `lag` grows when consumers cannot keep up with ingest, a Celery
queue grows when workers cannot keep up with sweeps, polls or syncs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from statusd.keys import Keys
from statusd.sweeper.celery_app import QUEUES


@dataclass(frozen=True, slots=True)
class StreamStats:
    length: int  # entries in the heartbeat stream (XLEN)
    lag: int | None  # entries not yet delivered to the consumer group (None: group missing)
    pending: int  # delivered but not acknowledged
    consumers: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def stream_stats(redis: Redis, keys: Keys) -> StreamStats:
    """XLEN + XINFO GROUPS of the heartbeat stream (zeros when it does not exist yet)."""
    length = int(await redis.xlen(keys.heartbeats))
    try:
        groups = await redis.xinfo_groups(keys.heartbeats)
    except ResponseError:  # no such key: nothing ingested yet
        return StreamStats(length=length, lag=0, pending=0, consumers=0)
    for group in groups:
        info = {_text(k): v for k, v in group.items()}
        if _text(info.get("name", "")) == keys.consumer_group:
            lag = info.get("lag")
            return StreamStats(
                length=length,
                # Redis reports lag as nil when it cannot compute it (after XDEL/trim): then the
                # whole stream is the safe upper bound for an autoscaler.
                lag=int(lag) if lag is not None else length,
                pending=int(info.get("pending", 0)),
                consumers=int(info.get("consumers", 0)),
            )
    return StreamStats(length=length, lag=None if length else 0, pending=0, consumers=0)


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
