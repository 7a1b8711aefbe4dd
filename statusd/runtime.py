"""The pools a process needs: one place that opens (and closes) them.

Only pools and what is built straight on them (keys, state cache, ledger), and the hooks the
layers above fill in. The post-commit listeners and the drain-kick hook are attached by
`statusd.wiring`, which the API app, the consumers, the Celery workers and the CLI all use, so a
transition is wired the same way whichever process applies it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.alert_routes import AlertRoutes
from statusd.alerting import FlapPolicy
from statusd.db import create_engine
from statusd.dependencies import ParentWatch
from statusd.errors import ConfigError
from statusd.keys import Keys
from statusd.redis_runtime import open_redis, resolve_redis_url
from statusd.settings import RedisMode, Settings
from statusd.state_cache import StateCache
from statusd.transitions import Ledger

# Ask for an outbox drain `delay_s` seconds from now. Never blocks and never raises: a lost kick
# costs latency only (beat's drain_due drains whatever is due).
DrainKick = Callable[[float], None]


def no_drain_kick(delay_s: float) -> None:
    """The hook of a runtime nothing attached a drain kick to: beat's drain_due still drains."""


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    redis: Redis
    keys: Keys
    cache: StateCache
    ledger: Ledger
    # The drain-kick hook (statusd.wiring attaches the Celery one): how an area that wrote outbox
    # rows asks for a prompt drain without importing a Celery task.
    kick_drain: DrainKick = no_drain_kick
    # Run first by close(): per-process helpers that need the pools (queued drain kicks).
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run after the Redis client is closed: what its mode opened besides (sentinel connections).
    redis_closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for hook in self.on_close:
            await hook()
        await self.redis.aclose()
        for closer in self.redis_closers:
            await closer()
        await self.engine.dispose()


def redis_url_or_fail(settings: Settings) -> str | None:
    """The Redis URL to connect to (None in sentinel mode: the sentinels name the primary)."""
    if settings.redis_mode is RedisMode.SENTINEL:
        return None
    if settings.redis_mode is RedisMode.CLUSTER:
        return settings.redis_url  # required by the settings; no local default for a cluster
    url = resolve_redis_url(settings.redis_url)
    if url is None:
        raise ConfigError(
            "Redis is not reachable: STATUSD_REDIS_URL is unset and nothing answers on 127.0.0.1:6379. "
            "Set STATUSD_REDIS_URL, or run `statusd up`, which starts an embedded Redis."
        )
    return url


async def open_pools(settings: Settings, *, redis_max_connections: int | None = None) -> Runtime:
    """Open the engine and Redis pool and build the Ledger, with no listeners yet (see wiring)."""
    redis, closers = open_redis(
        settings,
        redis_url_or_fail(settings),
        redis_max_connections or settings.redis_max_connections,
    )
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    keys = Keys(settings.redis_prefix, settings.stream_shards)
    cache = StateCache(redis, keys)
    ledger = Ledger(
        engine=engine,
        cache=cache,
        alert_webhooks=AlertRoutes.from_settings(settings),
        flap_policy=FlapPolicy(settings.flap_max, settings.flap_window),
        parents=ParentWatch(redis, keys, settings),
    )
    return Runtime(settings, engine, redis, keys, cache, ledger, redis_closers=closers)
