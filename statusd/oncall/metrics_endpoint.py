"""GET /metrics: the whole fleet in Prometheus text format, in one scrape.

Counters and histograms of every statusd process (API, consumers, Celery workers) come through
Redis (statusd.oncall.metrics_fleet). Backlog gauges are computed here, at scrape time, from the
source of truth: heartbeat stream length / consumer-group lag / pending entries, outbox depth /
oldest age / dead letters, Celery queue depths. No authentication (like most exporters): bind
the port to a private network or put it behind the same proxy rules as the API.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from statusd.app_keys import RUNTIME
from statusd.ingest.streams import stream_stats
from statusd.metrics import POLL_QUEUE_DEPTH, STREAM_LAG, STREAM_LENGTH, STREAM_PENDING
from statusd.oncall.backlog import broker_queue_depths
from statusd.oncall.metrics_fleet import (
    FleetCollector,
    Snapshot,
    fleet_snapshots,
    local_snapshot,
    merge,
)
from statusd.runtime import Runtime

log = structlog.get_logger("statusd.metrics")


async def refresh_scrape_gauges(runtime: Runtime) -> None:
    """Set the backlog gauges from Redis and the database; a part that fails is logged and skipped."""
    from statusd.sync.status import outbox_stats  # sets the outbox gauges itself

    try:
        stream = await stream_stats(runtime.redis, runtime.keys, runtime.settings.stream_shards)
        STREAM_LENGTH.set(stream.length)
        # No consumer group yet (lag None): nothing was ever delivered, the whole stream lags.
        STREAM_LAG.set(stream.lag if stream.lag is not None else stream.length)
        STREAM_PENDING.set(stream.pending)
    except Exception as exc:
        log.warning("metrics.stream_stats_failed", error=f"{type(exc).__name__}: {exc}")
    try:
        await outbox_stats(runtime.engine, runtime.settings)
    except Exception as exc:
        log.warning("metrics.outbox_stats_failed", error=f"{type(exc).__name__}: {exc}")
    try:
        for queue, depth in ((await broker_queue_depths(runtime)) or {}).items():
            POLL_QUEUE_DEPTH.labels(queue=queue).set(depth)
    except Exception as exc:
        log.warning("metrics.queue_depth_failed", error=f"{type(exc).__name__}: {exc}")


async def render_fleet(runtime: Runtime) -> bytes:
    """The merged exposition text (falls back to this process alone when Redis is down)."""
    await refresh_scrape_gauges(runtime)
    others: list[Snapshot] = []
    retired: dict[str, float] = {}
    stale_after = max(3 * runtime.settings.metrics_push_interval, 30.0)
    try:
        others, retired = await fleet_snapshots(runtime.redis, runtime.keys, stale_after)
    except Exception as exc:
        log.warning("metrics.fleet_read_failed", error=f"{type(exc).__name__}: {exc}")
    merged = merge(local_snapshot(with_scrape_time=True), others, retired)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(merged))
    return generate_latest(registry)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics."""
    body = await render_fleet(request.app[RUNTIME])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
