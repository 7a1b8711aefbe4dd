"""The aiohttp application factory: status API, heartbeat ingest, on-call endpoints, consumers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

from aiohttp import web

from statusd.api.routes import setup_api
from statusd.app_keys import RUNTIME, SETTINGS
from statusd.ingest.mount import setup_ingest
from statusd.oncall.endpoints import setup_oncall
from statusd.recovery import ensure_liveness_at_start
from statusd.settings import Settings
from statusd.wiring import open_runtime


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = await open_runtime(app[SETTINGS])
    app[RUNTIME] = runtime
    await ensure_liveness_at_start(runtime)  # Redis lost its data: rebuild before serving
    yield
    await runtime.close()


async def _frozen_heap(app: web.Application) -> AsyncIterator[None]:
    """What start-up built (modules, the schema's models, pools, routes) lives as long as the
    process: it is moved out of the cyclic collector's sight, so its passes walk what requests
    allocate, not ~120,000 long-lived objects. Measured with bench/ingest.py's statusd scenario
    (one core, wrk on the other), the same code with and without: 11-18% more heartbeats/s.
    Unfrozen at shutdown, so a process that builds apps one after another (tests) collects them."""
    if not app[SETTINGS].gc_freeze:
        yield
        return
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def create_app(settings: Settings, *, consumers: int | None = None) -> web.Application:
    """Build the app. `consumers` overrides STATUSD_CONSUMERS (consumer tasks in this process)."""

    settings.require_secrets()
    app = web.Application(
        client_max_size=settings.max_body_bytes * max(settings.max_batch_items, 1)
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_runtime_ctx)  # first in, last out: everything below uses the runtime
    setup_api(app)
    setup_ingest(app, consumers=settings.consumers if consumers is None else consumers)
    setup_oncall(app)
    app.cleanup_ctx.append(_frozen_heap)  # last: after everything above has started
    return app
