"""What the on-call report routes answer (GET /v1/reports/...): the stale report, the fleet
summary, recent transitions, the fleet over time and statusd's own health. The status page's
JavaScript and `statusd report` read these shapes: field names and order are a public contract.
The workload story (GET /v1/reports/workloads/{id}) is in statusd.schema.story."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from statusd.lifecycle import Kind, State
from statusd.models import OutboxTarget
from statusd.schema.responses import Answer, Transition
from statusd.schema.types import IsoTime, Labels, WorkloadId


class Disruption(Answer):
    active: bool = Field(description="most of the fleet went silent at once: no LOST/UNREACHABLE")
    since: IsoTime | None
    stale: int
    tracked: int
    fraction: float


class StaleItem(Answer):
    id: WorkloadId
    kind: Kind
    state: State
    reason: str = Field(description="lost, unreachable, stale or never_seen")
    labels: Labels
    last_seen_at: IsoTime | None = Field(description="None when never seen")
    stale_for_s: float = Field(description="since the last sign of life (or registration)")
    poll_failures: int = Field(description="consecutive failed polls")
    last_poll_error: str | None
    state_since: IsoTime
    flapping: bool = False
    silenced: bool = False
    suppressed_by: WorkloadId | None = Field(
        default=None, description="its parent, down: its unreachable/lost alerts are held"
    )


class StaleReport(Answer):
    items: list[StaleItem] = Field(description="worst first: LOST, UNREACHABLE, stale")
    count: int
    generated_at: IsoTime
    disruption: Disruption


# -- GET /v1/reports/summary -----------------------------------------------------------------------


class StaleCounts(Answer):
    total: int
    by_reason: dict[str, int] = Field(description="lost, unreachable, stale, never_seen")
    by_kind: dict[Kind, int]


class TargetBacklog(Answer):
    pending: int
    dead: int
    oldest_age_s: float | None = Field(description="age of the oldest pending row (None: none)")


class SyncBacklog(Answer):
    """The transactional outbox (statusd.sync.status.outbox_stats)."""

    depth: int = Field(description="rows pending, every target")
    oldest_unsynced_age_s: float | None
    dead_letters: int
    workloads_unsynced: int
    targets: dict[OutboxTarget, TargetBacklog]
    sync: Literal["enabled", "disabled"] = Field(
        description="main-DB sync: disabled while STATUSD_MAIN_API_URL is unset (rows kept)"
    )


class StreamLag(Answer):
    """The heartbeat stream, summed over its shards (statusd.ingest.streams.stream_stats)."""

    length: int = Field(description="entries in every shard stream (XLEN)")
    lag: int | None = Field(description="not yet delivered to the consumers (None: no group yet)")
    pending: int = Field(description="delivered, not acknowledged")
    consumers: int = Field(description="live consumers")


class Summary(Answer):
    generated_at: IsoTime
    counts: dict[Kind, dict[State, int]] = Field(
        description="registered workloads per kind x state; every kind is present"
    )
    stale: StaleCounts
    sync: SyncBacklog
    stream: StreamLag
    celery_queues: dict[str, int] | None = Field(
        description="messages waiting per Celery queue (None: a broker that cannot be asked)"
    )


# -- GET /v1/reports/transitions -------------------------------------------------------------------


class RecentTransitions(Answer):
    items: list[Transition] = Field(description="newest first")
    count: int
    last_id: int = Field(description="resume GET /v1/events here (Last-Event-ID)")


# -- GET /v1/reports/history -----------------------------------------------------------------------


class HistorySample(Answer):
    at: IsoTime
    counts: dict[State, int] = Field(description="states with none are left out")


class FleetHistory(Answer):
    window_s: float
    step_s: float
    states: list[State] = Field(description="every state seen in the window, lifecycle order")
    samples: list[HistorySample] = Field(description="oldest first; the last is now")


# -- GET /v1/reports/selfwatch ---------------------------------------------------------------------


class SweeperHealth(Answer):
    stalled: bool = Field(description="no sweep finished within stalled_after_s (or ever)")
    last_success_at: IsoTime | None
    seconds_since_success: float | None
    sweep_interval_s: float
    stalled_after_s: float


class SelfWatch(Answer):
    disruption: Disruption
    sweeper: SweeperHealth
    generated_at: IsoTime


# -- GET /v1/reports/availability ------------------------------------------------------------------


class GroupSeconds(Answer):
    up: float = Field(description="RUNNING, READY, IDLE, DEGRADED")
    down: float = Field(description="UNREACHABLE, LOST")
    starting: float = Field(description="PENDING, STARTING, DEPLOYING")
    stopping: float = Field(description="STOPPING (final states count nowhere)")


class AvailabilityFigures(Answer):
    seconds: GroupSeconds = Field(description="seconds in each state group within the window")
    states: dict[State, float] = Field(description="seconds per state (states with none left out)")
    unheard_s: float = Field(description="left out: no ingest process was listening")
    maintenance_s: float = Field(description="left out: maintenance windows")
    availability: float | None = Field(description="up / (up + down); null when both are 0")


class WorkloadAvailability(AvailabilityFigures):
    id: WorkloadId
    kind: Kind
    labels: Labels


class GroupAvailability(AvailabilityFigures):
    group: str | None = Field(description="the kind or label value; null: without that label")
    workloads: int


class TotalAvailability(AvailabilityFigures):
    workloads: int


class AvailabilityReport(Answer):
    from_: IsoTime = Field(alias="from")
    to: IsoTime
    group_by: str | None
    workloads: list[WorkloadAvailability] = Field(description="by id")
    groups: list[GroupAvailability] = Field(description="empty without group_by")
    total: TotalAvailability
