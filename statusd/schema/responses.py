"""Response bodies: what the JSON routes answer. Handlers build these and serialize them
(statusd.api.error_responses.model_response); the OpenAPI document states them from the same classes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from statusd.lifecycle import Kind, Source, State
from statusd.schema.bodies import SilenceMatch
from statusd.schema.types import IsoTime, Labels, WorkloadId


class Answer(BaseModel):
    # Built on first use, as statusd.schema.bodies.Body explains.
    model_config = ConfigDict(
        frozen=True, populate_by_name=True, serialize_by_alias=True, defer_build=True
    )


class Error(Answer):
    error: str = Field(description="machine-readable code")
    message: str = Field(description="what went wrong, in words")
    field: str | None = Field(default=None, description="the input field or parameter at fault")
    rule: str | None = Field(default=None, description="409 transition_refused: the lifecycle rule")


class Workload(Answer):
    id: WorkloadId
    kind: Kind
    state: State
    labels: Labels
    status_url: str | None = None
    last_seen_at: IsoTime | None = None
    last_seq: int | None = None
    state_changed_at: IsoTime
    created_at: IsoTime
    stale: bool = Field(
        description="no sign of life within STATUSD_HEARTBEAT_TTL (never seen: older than "
        "STATUSD_START_TIMEOUT); always in UNREACHABLE/LOST; final states never"
    )
    synced: bool | None = Field(
        description="no transition waiting to reach the main DB; null when no main API is "
        "configured (STATUSD_MAIN_API_URL unset)"
    )
    generation: int = Field(description="bumped on each re-registration of the id")
    flapping: bool = Field(
        default=False,
        description="more than STATUSD_FLAP_MAX recoveries from UNREACHABLE within "
        "STATUSD_FLAP_WINDOW; its flaps raise no alerts",
    )
    silenced: bool = Field(
        default=False, description="a silence (POST /v1/silences) covers it: tracked, no alerts"
    )
    parent: WorkloadId | None = Field(
        default=None, description="the workload this one depends on, named at registration"
    )
    suppressed_by: WorkloadId | None = Field(
        default=None,
        description="the parent, while it is UNREACHABLE, LOST or stale: this workload's "
        "unreachable/lost alerts are held until it recovers; null otherwise",
    )


class RegisteredWorkload(Workload):
    heartbeat_token: str


class WorkloadPage(Answer):
    items: list[Workload]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class PrunedRows(Answer):
    rows: int = Field(description="deleted (dry run: that would be)")
    batches: int = Field(description="delete statements, each its own short transaction")


class PruneResult(Answer):
    dry_run: bool
    tables: dict[str, PrunedRows] = Field(
        description="transitions, refused_observations, outbox, audit_events, workloads"
    )
    rollup_days: int = Field(description="availability rollup rows written first")
    seconds: float
    longest_batch_s: float = Field(description="the longest single delete transaction")


class Deleted(Answer):
    id: str
    deleted: Literal[True] = True
    deleted_at: IsoTime | None = None


class Transition(Answer):
    id: int
    workload_id: WorkloadId
    generation: int | None = None
    kind: Kind
    from_state: State = Field(alias="from")
    to: State
    source: Source
    reason: str | None = None
    actor: str | None = None
    seq: int | None = None
    observed_at: IsoTime
    recorded_at: IsoTime


class TransitionPage(Answer):
    items: list[Transition]
    next_after: int | None = Field(description="pass as ?after= for the next page")


class TransitionResult(Answer):
    outcome: Literal["applied", "unchanged"]
    state: State
    transition: Transition | None


class Silence(Answer):
    id: str
    match: SilenceMatch
    until: IsoTime
    reason: str
    created_at: IsoTime
    active: bool = Field(description="until is still ahead")

    @field_serializer("match")
    def _given_matchers_only(self, match: SilenceMatch) -> dict[str, str]:
        return match.model_dump(mode="json", exclude_none=True)  # as it was asked for


class Maintenance(Answer):
    id: str
    match: SilenceMatch
    start: IsoTime | None = Field(description="a one-off window's start")
    end: IsoTime | None = Field(description="a one-off window's end")
    schedule: str | None = Field(description="a recurring window's cron expression")
    duration_s: int | None = Field(description="each occurrence's length")
    timezone: str | None = Field(description="the IANA time zone `schedule` is read in")
    reason: str
    created_at: IsoTime
    active: bool = Field(description="an occurrence is in force now")
    next_start: IsoTime | None = Field(
        description="the occurrence in force, else the next one (None: a window that is over)"
    )
    next_end: IsoTime | None

    @field_serializer("match")
    def _given_matchers_only(self, match: SilenceMatch) -> dict[str, str]:
        return match.model_dump(mode="json", exclude_none=True)


class MaintenancePage(Answer):
    items: list[Maintenance]
    count: int


class SilencePage(Answer):
    items: list[Silence]
    count: int


class Health(Answer):
    status: str


class Readiness(Answer):
    status: str
    checks: dict[str, str]
    down: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(
        default_factory=list,
        description="problems that do not make it unready (a stalled sweeper)",
    )


RENEWED_TOKEN = (
    "present when the token sent was signed with a secret being rotated out "
    "(STATUSD_SECRET_PREVIOUS): use this one from now on"
)


class Accepted(Answer):
    status: Literal["accepted"] = "accepted"
    next_heartbeat_s: float = Field(description="send the next heartbeat after this many seconds")
    heartbeat_token: str | None = Field(default=None, description=RENEWED_TOKEN)
