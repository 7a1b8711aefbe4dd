"""Wiring: the post-commit listeners and hooks every Runtime gets, attached in one place.

`statusd.runtime` opens and closes pools and knows nothing above the transition layer; this
module is the one that knows the areas listening to a commit (live events, the outbox sync kick,
the transition counter) and the Celery producer behind the drain-kick hook, so lower layers
never import upward to reach them.
"""

from __future__ import annotations

import asyncio

from statusd.celery import drain_kick
from statusd.oncall.events import publish_listener
from statusd.oncall.instrument import count_transitions
from statusd.runtime import Runtime, open_pools
from statusd.settings import Settings
from statusd.sync.kick import sync_kick_listener


def wire(runtime: Runtime) -> Runtime:
    """Attach the drain-kick hook, and the publish (SSE), sync kick and metrics listeners."""
    runtime.kick_drain = drain_kick.kicker(runtime.settings)
    listeners = runtime.ledger.listeners
    listeners.append(publish_listener(runtime.redis, runtime.keys))
    listeners.append(
        sync_kick_listener(runtime.settings, runtime.redis, runtime.keys, runtime.kick_drain)
    )
    listeners.append(count_transitions())
    # Queued kicks are sent and the producer's broker connections closed (it is rebuilt lazily
    # if another runtime in this process kicks again).
    runtime.on_close.append(lambda: asyncio.to_thread(drain_kick.close))
    return runtime


async def open_runtime(settings: Settings, *, redis_max_connections: int | None = None) -> Runtime:
    """Open the pools and attach the listeners: what every process that applies transitions uses."""
    return wire(await open_pools(settings, redis_max_connections=redis_max_connections))
