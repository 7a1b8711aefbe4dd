"""One workload's story for on-call: its state now, what happened to it, what was refused, polls,
and whether the main DB knows. Served as GET /v1/reports/workloads/{id} (the page /workloads/{id}).

Polls: statusd keeps no per-poll log. What exists is the sweeper's bookkeeping on the workload row
(last_poll_at, poll_failures, last_poll_error) and the transitions a poll caused (source `pull`,
or the sweeper's UNREACHABLE/LOST verdicts after failed polls); the story shows exactly those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from statusd.api.serializers import Liveness, iso, synced_flag, transition_out, workload_out
from statusd.api.workloads import load_workload
from statusd.db import reading
from statusd.errors import UnknownWorkload
from statusd.lifecycle import Source, State
from statusd.models import (
    OutboxStatus,
    OutboxTarget,
)
from statusd.runtime import Runtime
from statusd.schema import responses, story
from statusd.sync.status import unsynced_workloads
from statusd.tables import OUTBOX, REFUSED_OBSERVATIONS, TRANSITIONS, WORKLOADS

MAX_TRANSITIONS = 500  # newest first; a page that draws more bands than pixels helps nobody
MAX_REFUSED = 100


@dataclass(frozen=True, slots=True)
class StoryBand:
    """A stretch of time the workload spent in one state (end None: it is still in it)."""

    state: State
    start: datetime
    end: datetime | None
    transition_id: int | None  # the transition that began it (None: registration)

    def out(self) -> story.Band:
        return story.Band(
            state=self.state,
            start=iso(self.start) or "",
            end=iso(self.end),
            transition_id=self.transition_id,
        )


def timeline(
    created_at: datetime,
    transitions: Sequence[Mapping[str, Any]],
    *,
    complete: bool,
    until: datetime | None = None,
) -> list[StoryBand]:
    """State bands from history rows (oldest first: id, from_state, to_state, recorded_at).

    With the complete history, the first band is the state it was registered in (the first
    move's `from`), from registration on; with only the newest rows, the picture starts at the
    first row shown. A re-registration resets created_at, so an earlier start is never invented.
    The last band lasts until `until` (deregistration), or stays open (None: still in it).
    """
    bands: list[StoryBand] = []
    if not transitions:
        return bands
    first = transitions[0]
    if complete and created_at < first["recorded_at"]:
        bands.append(StoryBand(State(first["from_state"]), created_at, first["recorded_at"], None))
    for row, following in zip(transitions, [*transitions[1:], None], strict=True):
        end = following["recorded_at"] if following is not None else until
        bands.append(StoryBand(State(row["to_state"]), row["recorded_at"], end, int(row["id"])))
    return bands


async def _newest(conn: AsyncConnection, table: Any, workload_id: str, limit: int) -> list[Any]:
    rows = await conn.execute(
        select(table)
        .where(table.c.workload_id == workload_id)
        .order_by(table.c.id.desc())
        # One more than shown tells whether the list is complete without a COUNT.
        .limit(limit + 1)
    )
    return [dict(r._mapping) for r in rows]


def refused_out(row: Mapping[str, Any]) -> story.Refused:
    return story.Refused(
        id=int(row["id"]),
        current_state=row["current_state"],
        requested_state=row["requested_state"],
        source=row["source"],
        actor=row.get("actor"),
        rule=row["rule"],
        reason=row.get("reason"),
        seq=row.get("seq"),
        observed_at=iso(row["observed_at"]) or "",
        recorded_at=iso(row["recorded_at"]) or "",
    )


async def _sync(
    conn: AsyncConnection, workload_id: str
) -> tuple[dict[OutboxTarget, story.TargetSync], story.SyncProblem | None]:
    """Outbox rows of this workload per target and status, the newest error."""
    rows = await conn.execute(
        select(OUTBOX.c.target, OUTBOX.c.status, func.count(), func.max(OUTBOX.c.synced_at))
        .where(OUTBOX.c.workload_id == workload_id)
        .group_by(OUTBOX.c.target, OUTBOX.c.status)
    )
    targets: dict[OutboxTarget, dict[str, Any]] = {}
    for target, status, count, synced_at in rows:
        entry = targets.setdefault(
            OutboxTarget(target), {"pending": 0, "synced": 0, "dead": 0, "last_synced_at": None}
        )
        entry[OutboxStatus(status).value] = int(count)
        if synced_at is not None:
            entry["last_synced_at"] = iso(synced_at)
    problem = (
        await conn.execute(
            select(
                OUTBOX.c.target,
                OUTBOX.c.status,
                OUTBOX.c.last_error,
                OUTBOX.c.attempts,
                OUTBOX.c.transition_id,
            )
            .where(
                OUTBOX.c.workload_id == workload_id,
                OUTBOX.c.status != OutboxStatus.SYNCED,
                OUTBOX.c.last_error.is_not(None),
            )
            .order_by(OUTBOX.c.id.desc())
            .limit(1)
        )
    ).first()
    last_error = (
        None
        if problem is None
        else story.SyncProblem(
            target=problem.target,
            status=problem.status,
            error=problem.last_error,
            attempts=int(problem.attempts),
            transition_id=int(problem.transition_id),
        )
    )
    return {t: story.TargetSync.model_validate(e) for t, e in targets.items()}, last_error


async def workload_known(rt: Runtime, workload_id: str) -> bool:
    """Registered now or once (a deregistered workload keeps its row and its history)."""
    async with reading(rt.engine) as conn:
        found = await conn.execute(select(WORKLOADS.c.id).where(WORKLOADS.c.id == workload_id))
        return found.first() is not None


async def _workload(rt: Runtime, workload_id: str) -> tuple[responses.Workload, datetime | None]:
    """The workload as the API shows it, and when it was deregistered (None: it is tracked)."""
    try:
        return responses.Workload.model_validate(await load_workload(rt, workload_id)), None
    except UnknownWorkload:
        pass
    # Deregistered: statusd no longer tracks its liveness, but on-call still asks what happened.
    async with reading(rt.engine) as conn:
        row = (await conn.execute(select(WORKLOADS).where(WORKLOADS.c.id == workload_id))).first()
        if row is None:
            raise UnknownWorkload(f"workload {workload_id!r} was never registered")
        synced = synced_flag(
            rt.settings, workload_id in await unsynced_workloads(conn, [workload_id])
        )
    fields = dict(row._mapping)
    liveness = Liveness.merge(fields, None, None)
    return workload_out(fields, liveness, stale=False, synced=synced), fields["deleted_at"]


async def workload_story(rt: Runtime, workload_id: str) -> story.WorkloadStory:
    """Everything the workload page shows, deregistered workloads included (their history is
    kept). Raises UnknownWorkload (404) for ids never registered."""
    workload, deregistered_at = await _workload(rt, workload_id)
    async with reading(rt.engine) as conn:
        row = (
            await conn.execute(
                select(
                    WORKLOADS.c.created_at,
                    WORKLOADS.c.last_poll_at,
                    WORKLOADS.c.poll_failures,
                    WORKLOADS.c.last_poll_error,
                ).where(WORKLOADS.c.id == workload_id)
            )
        ).one()
        history = await _newest(conn, TRANSITIONS, workload_id, MAX_TRANSITIONS)
        refused = await _newest(conn, REFUSED_OBSERVATIONS, workload_id, MAX_REFUSED)
        pulls = (
            await conn.execute(
                select(func.count()).where(
                    TRANSITIONS.c.workload_id == workload_id, TRANSITIONS.c.source == Source.PULL
                )
            )
        ).scalar_one()
        targets, last_error = await _sync(conn, workload_id)
    complete = len(history) <= MAX_TRANSITIONS
    shown = list(reversed(history[:MAX_TRANSITIONS]))  # oldest first
    # The timeline tells the current registration's story (a re-registration starts PENDING
    # again); the table keeps every generation. An older generation in view means this one's
    # history is all there.
    generation = workload.generation
    current = [t for t in shown if t["generation"] == generation]
    whole = complete or len(current) < len(shown)
    return story.WorkloadStory(
        workload=workload,
        deregistered_at=iso(deregistered_at),
        timeline=[
            b.out()
            for b in timeline(row.created_at, current, complete=whole, until=deregistered_at)
        ],
        transitions=[transition_out(r) for r in shown],
        transitions_complete=complete,
        refused=[refused_out(r) for r in refused[:MAX_REFUSED]],
        refused_complete=len(refused) <= MAX_REFUSED,
        polls=story.Polls(
            status_url=workload.status_url,
            last_poll_at=iso(row.last_poll_at),
            poll_failures=int(row.poll_failures),
            last_poll_error=row.last_poll_error,
            transitions_from_polls=int(pulls),
        ),
        sync=story.StorySync(synced=workload.synced, targets=targets, last_error=last_error),
    )
