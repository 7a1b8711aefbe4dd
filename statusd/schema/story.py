"""One workload's story, GET /v1/reports/workloads/{id} (the status page's /workloads/{id}): the
workload now, its timeline, what happened and what was refused, its polls and its sync."""

from __future__ import annotations

from pydantic import Field

from statusd.lifecycle import Source, State
from statusd.models import OutboxStatus, OutboxTarget
from statusd.schema.responses import Answer, Transition, Workload
from statusd.schema.types import IsoTime


class Band(Answer):
    """A stretch of time the workload spent in one state."""

    state: State
    start: IsoTime
    end: IsoTime | None = Field(description="None: it is still in this state")
    transition_id: int | None = Field(description="the transition that began it (None: registered)")


class Refused(Answer):
    """An observation the lifecycle refused, and the rule that said no."""

    id: int
    current_state: State
    requested_state: str = Field(description="as it was asked for (not always a known state)")
    source: Source
    actor: str | None
    rule: str
    reason: str | None
    seq: int | None
    observed_at: IsoTime
    recorded_at: IsoTime


class Polls(Answer):
    """The sweeper's bookkeeping on the workload (statusd keeps no per-poll log)."""

    status_url: str | None
    last_poll_at: IsoTime | None
    poll_failures: int = Field(description="consecutive failed polls")
    last_poll_error: str | None
    transitions_from_polls: int


class TargetSync(Answer):
    """This workload's outbox rows to one target, by status."""

    pending: int
    synced: int
    dead: int
    last_synced_at: IsoTime | None


class SyncProblem(Answer):
    """The newest unsynced row that has an error."""

    target: OutboxTarget
    status: OutboxStatus
    error: str
    attempts: int
    transition_id: int


class StorySync(Answer):
    synced: bool | None = Field(
        description="no transition waiting to reach the main DB; null when no main API is "
        "configured (STATUSD_MAIN_API_URL unset)"
    )
    targets: dict[OutboxTarget, TargetSync]
    last_error: SyncProblem | None


class WorkloadStory(Answer):
    workload: Workload
    deregistered_at: IsoTime | None = Field(description="None: still registered")
    timeline: list[Band] = Field(description="the current registration, oldest first")
    transitions: list[Transition] = Field(description="every generation, oldest first")
    transitions_complete: bool = Field(description="false: only the newest are shown")
    refused: list[Refused] = Field(description="newest first")
    refused_complete: bool
    polls: Polls
    sync: StorySync
