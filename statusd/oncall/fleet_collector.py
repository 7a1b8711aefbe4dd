"""Fleet-wide figures for /metrics, read from Redis and the database at scrape time.

What no single process counts: the heartbeat stream's length and lag, the outbox, the Celery
queues, the workloads by kind and state, when the sweeper last finished a sweep, whether it is in
disruption mode. Read fresh on every scrape (never pushed, never stale) and exported by the API
process kind only (`statusd serve`): every serve process reports the same fleet, so aggregate these
with max() (or pick one instance), never sum(). A part that cannot be read is left out of the
scrape and `statusd_fleet_read_success{part}` says 0, so an alert sees a gap rather than a zero.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import structlog
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from statusd.db import reading
from statusd.ingest.streams import StreamStats, stream_stats
from statusd.lifecycle import Kind, allowed_moves
from statusd.oncall.backlog import broker_queue_depths
from statusd.runtime import Runtime
from statusd.selfwatch import DisruptionMode, last_sweep_success, read_disruption
from statusd.sync.status import outbox_stats
from statusd.tables import WORKLOADS

log = structlog.get_logger("statusd.metrics")
T = TypeVar("T")


class FleetPart(StrEnum):
    """The separately read parts of the fleet figures (label of statusd_fleet_read_success)."""

    STREAM = "stream"
    OUTBOX = "outbox"
    QUEUES = "queues"
    WORKLOADS = "workloads"
    SELFWATCH = "selfwatch"


@dataclass(frozen=True)
class SelfWatchFigures:
    sweep_last_success: float | None
    disruption: DisruptionMode


@dataclass
class FleetFigures:
    """One scrape's reading; a part is None when it could not be read."""

    stream: StreamStats | None = None
    outbox: dict[str, dict[str, Any]] | None = None  # outbox_stats()["targets"]
    queues: dict[str, int] | None = None
    workloads: dict[tuple[Kind, str], int] | None = None
    selfwatch: SelfWatchFigures | None = None
    failed: set[FleetPart] = field(default_factory=set)


async def workloads_by_state(runtime: Runtime) -> dict[tuple[Kind, str], int]:
    """Tracked (not deleted) workloads per kind and state; every state of a kind's table is
    present, 0 when empty, so a series does not vanish when its last workload moves on."""
    counts: dict[tuple[Kind, str], int] = {
        (kind, state.value): 0 for kind in Kind for state in allowed_moves(kind)
    }
    async with reading(runtime.engine) as conn:
        rows = await conn.execute(
            select(WORKLOADS.c.kind, WORKLOADS.c.state, func.count())
            .where(WORKLOADS.c.deleted_at.is_(None))
            .group_by(WORKLOADS.c.kind, WORKLOADS.c.state)
        )
        for kind, state, count in rows:
            counts[(Kind(kind), str(getattr(state, "value", state)))] = int(count)
    return counts


async def _selfwatch(runtime: Runtime) -> SelfWatchFigures:
    return SelfWatchFigures(
        sweep_last_success=await last_sweep_success(runtime.redis, runtime.keys),
        disruption=await read_disruption(runtime.redis, runtime.keys),
    )


async def _outbox(runtime: Runtime) -> dict[str, dict[str, Any]]:
    targets: dict[str, dict[str, Any]] = (await outbox_stats(runtime.engine))["targets"]
    return targets


async def _queues(runtime: Runtime) -> dict[str, int] | None:
    return await broker_queue_depths(runtime)


async def read_fleet(runtime: Runtime) -> FleetFigures:
    """Read every part; a failure is logged and recorded, never raised (the scrape goes on)."""
    figures = FleetFigures()

    async def part(name: FleetPart, read: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await read()
        except Exception as exc:  # any failure: this part is missing from this scrape
            log.warning("metrics.fleet_read_failed", part=name.value, error=f"{exc!r}"[:300])
            figures.failed.add(name)
            return None

    settings = runtime.settings
    figures.stream = await part(
        FleetPart.STREAM, lambda: stream_stats(runtime.redis, runtime.keys, settings.stream_shards)
    )
    figures.outbox = await part(FleetPart.OUTBOX, lambda: _outbox(runtime))
    figures.queues = await part(FleetPart.QUEUES, lambda: _queues(runtime))
    figures.workloads = await part(FleetPart.WORKLOADS, lambda: workloads_by_state(runtime))
    figures.selfwatch = await part(FleetPart.SELFWATCH, lambda: _selfwatch(runtime))
    return figures


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class FleetCollector(Collector):
    """Yields one scrape's FleetFigures as gauge families."""

    def __init__(self, figures: FleetFigures) -> None:
        self.figures = figures

    def collect(self) -> Iterable[Metric]:
        f = self.figures
        ok = GaugeMetricFamily(
            "statusd_fleet_read_success",
            "1 when this scrape could read that part of the fleet figures, else 0",
            labels=["part"],
        )
        for fleet_part in FleetPart:
            ok.add_metric([fleet_part.value], 0.0 if fleet_part in f.failed else 1.0)
        yield ok
        yield _gauge("statusd_fleet_scrape_timestamp_seconds", "When these were read", time.time())
        if f.stream is not None:
            yield from self._stream(f.stream)
        if f.outbox is not None:
            yield from self._outbox(f.outbox)
        if f.queues is not None:
            depth = GaugeMetricFamily(
                "statusd_celery_queue_depth",
                "Messages waiting in a Celery queue (workers behind: scale them out)",
                labels=["queue"],
            )
            for queue, n in sorted(f.queues.items()):
                depth.add_metric([queue], n)
            yield depth
        if f.workloads is not None:
            states = GaugeMetricFamily(
                "statusd_workloads",
                "Tracked (not deleted) workloads by kind and state",
                labels=["kind", "state"],
            )
            for (kind, state), n in sorted(f.workloads.items()):
                states.add_metric([kind.value, state], n)
            yield states
        if f.selfwatch is not None:
            yield from self._selfwatch(f.selfwatch)

    @staticmethod
    def _stream(s: StreamStats) -> Iterable[Metric]:
        yield _gauge("statusd_stream_length", "Entries in the heartbeat stream", s.length)
        # No consumer group yet (lag None): nothing was ever delivered, the whole stream lags.
        yield _gauge(
            "statusd_stream_lag",
            "Entries not yet delivered to the consumer group (consumers behind: scale them out)",
            s.lag if s.lag is not None else s.length,
        )
        yield _gauge("statusd_stream_pending", "Entries delivered but not acknowledged", s.pending)

    @staticmethod
    def _outbox(targets: dict[str, dict[str, Any]]) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "statusd_outbox_depth", "Outbox rows not yet synced", labels=["target"]
        )
        age = GaugeMetricFamily(
            "statusd_outbox_oldest_age_seconds",
            "Age of the oldest unsynced outbox row (0 when none)",
            labels=["target"],
        )
        dead = GaugeMetricFamily(
            "statusd_outbox_dead", "Outbox rows dead-lettered", labels=["target"]
        )
        for target, entry in sorted(targets.items()):
            depth.add_metric([target], entry["pending"])
            age.add_metric([target], entry["oldest_age_s"] or 0.0)
            dead.add_metric([target], entry["dead"])
        yield from (depth, age, dead)

    @staticmethod
    def _selfwatch(watch: SelfWatchFigures) -> Iterable[Metric]:
        # Never swept: the series is absent (alert on absent(), not on a fake epoch 0).
        if watch.sweep_last_success is not None:
            yield _gauge(
                "statusd_sweep_last_success_timestamp_seconds",
                "Unix time at which a sweep last finished without error",
                watch.sweep_last_success,
            )
        yield _gauge(
            "statusd_disruption",
            "1 while the sweeper judges most of the fleet silent at once (disruption mode)",
            1.0 if watch.disruption.active else 0.0,
        )
