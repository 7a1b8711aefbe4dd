"""GET /metrics of one statusd process (or process group), the Prometheus way.

- Each process kind exposes its own metrics; Prometheus scrapes each and does the summing.
  A multiprocess group (`serve --workers N`, a prefork Celery worker) answers for all its
  processes (statusd.oncall.multiproc).
- The API process kind (`statusd serve`) also exports the fleet-wide figures, read from Redis
  and the database at scrape time (statusd.oncall.fleet_collector). Other kinds do not, so
  Prometheus never sees them twice from one host's process kinds.
- Where: on the API port when STATUSD_METRICS_PORT is unset; on its own listener when it is set
  (then the public port, which tenant containers reach, has no /metrics at all).
- STATUSD_METRICS_TOKEN, when set, is required as `Authorization: Bearer <token>`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from statusd.api.error_responses import error_response
from statusd.app_keys import RUNTIME, SETTINGS
from statusd.oncall import multiproc_samples
from statusd.oncall.fleet_collector import FleetCollector, read_fleet
from statusd.oncall.metrics_access import METRICS_PATH, token_ok
from statusd.runtime import Runtime
from statusd.settings import Settings

WITH_FLEET = web.AppKey("metrics_with_fleet", bool)


async def render(runtime: Runtime | None) -> bytes:
    """This process's (or group's) metrics, plus the fleet figures when `runtime` is given."""
    body = generate_latest(multiproc_samples.exposition_registry())
    if runtime is None:
        return body
    fleet = CollectorRegistry(auto_describe=False)
    fleet.register(FleetCollector(await read_fleet(runtime)))
    return body + generate_latest(fleet)


async def metrics(request: web.Request) -> web.StreamResponse:
    """GET /metrics."""
    if not token_ok(request.headers.get("Authorization"), request.app[SETTINGS].metrics_token):
        refused = error_response(
            401, "unauthorized", "/metrics needs `Authorization: Bearer <STATUSD_METRICS_TOKEN>`"
        )
        refused.headers["WWW-Authenticate"] = 'Bearer realm="statusd-metrics"'
        return refused
    runtime = request.app[RUNTIME] if request.app[WITH_FLEET] else None
    body = await render(runtime)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_metrics_route(app: web.Application, *, with_fleet: bool) -> None:
    """/metrics on `app` (which holds SETTINGS, and RUNTIME when `with_fleet`)."""
    app[WITH_FLEET] = with_fleet
    app.router.add_get(METRICS_PATH, metrics, allow_head=False)


@asynccontextmanager
async def metrics_listener(
    settings: Settings, runtime: Runtime, *, with_fleet: bool
) -> AsyncIterator[int]:
    """Serve /metrics on STATUSD_METRICS_PORT (host STATUSD_HOST) while inside; yields the
    bound port. A multiprocess group's members share the port (SO_REUSEPORT): whichever answers
    reports the whole group."""
    if settings.metrics_port is None:
        raise ValueError("metrics_listener needs STATUSD_METRICS_PORT")
    app = web.Application()
    app[SETTINGS] = settings
    app[RUNTIME] = runtime
    add_metrics_route(app, with_fleet=with_fleet)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner, settings.host, settings.metrics_port, reuse_port=multiproc_samples.active() or None
    )
    await site.start()
    try:
        yield _bound_port(runner, settings.metrics_port)
    finally:
        await runner.cleanup()


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured


async def metrics_listener_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx of the API app: its metrics listener, with the fleet figures."""
    async with metrics_listener(app[SETTINGS], app[RUNTIME], with_fleet=True):
        yield


def setup_metrics(app: web.Application) -> None:
    """The API app's /metrics: its own listener when STATUSD_METRICS_PORT is set, else a route."""
    if app[SETTINGS].metrics_port is None:
        add_metrics_route(app, with_fleet=True)
    else:
        app.cleanup_ctx.append(metrics_listener_ctx)  # after the runtime's: it reads through it
