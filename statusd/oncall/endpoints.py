"""On-call routes: stale reports, live events (SSE), metrics, the status page, login."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from statusd.app_keys import RUNTIME, SETTINGS
from statusd.oncall import login, page, page_api, report_routes, workload_pages
from statusd.oncall.metrics_endpoint import setup_metrics
from statusd.oncall.sse import HUB, EventHub, close_hub


async def _event_hub_ctx(app: web.Application) -> AsyncIterator[None]:

    settings = app[SETTINGS]
    app[HUB] = EventHub(
        app[RUNTIME],
        ping_interval=settings.events_ping_interval,
        max_holdback=settings.events_max_holdback,
    )
    yield
    await app[HUB].close()


def setup_oncall(app: web.Application) -> None:
    """Register the on-call routes, login, /metrics (or its listener), the event hub, stream shutdown."""

    app.cleanup_ctx.append(_event_hub_ctx)  # after the runtime's: it needs the runtime open
    app.on_shutdown.append(close_hub)  # before the server waits for handlers: end streams now
    report_routes.add_routes(app)
    page.add_routes(app)
    page_api.add_routes(app)
    workload_pages.add_routes(app)
    setup_metrics(app)
    login.add_routes(app)
