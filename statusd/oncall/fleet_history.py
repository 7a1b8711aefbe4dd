"""The fleet over time: how many workloads were in each state at each moment of a recent window.

Rebuilt from the transition history, backward from now: each workload row holds its state now,
and undoing the window's transitions newest first (a move A -> B at t means "A just before t")
gives the state at every earlier sample time. A workload counts only while it existed: from its
`created_at` until its `deleted_at`. Cost is one pass over the window's transitions plus one over
the workloads, not one per sample (O(workloads + transitions + samples x states)).

Served as GET /v1/reports/history (the status page's fleet picture).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.access.label_sql import carrying, ids_carrying
from statusd.db import is_sqlite, reading
from statusd.lifecycle import Kind, State
from statusd.schema import reports
from statusd.tables import TRANSITIONS, WORKLOADS


@dataclass(frozen=True, slots=True)
class WorkloadNow:
    """What the workloads table says about one workload now."""

    id: str
    state: State
    created_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Move:
    """One applied transition, as the reconstruction needs it."""

    workload_id: str
    from_state: State
    to_state: State
    at: datetime


@dataclass(frozen=True, slots=True)
class Sample:
    at: datetime
    counts: dict[State, int]


class _Event(IntEnum):
    # Undo order among events at the same instant (walking backward): a workload deleted at t
    # comes back before its moves at t are undone, and disappears only after them if created at t.
    DELETED = 0
    MOVED = 1
    CREATED = 2


def sample_times(now: datetime, window_s: float, step_s: float) -> list[datetime]:
    """Sample instants, oldest first, ending at `now` and spaced `step_s` apart."""
    n = int(window_s // step_s)
    return [now - timedelta(seconds=step_s * k) for k in range(n, -1, -1)]


def reconstruct(
    workloads: Iterable[WorkloadNow],
    moves: Iterable[Move],
    times: Sequence[datetime],
    *,
    quiet: Mapping[State, int] | None = None,
) -> list[Sample]:
    """Counts by state at each of `times` (ascending, none after the rows were read).

    `moves` must hold every transition recorded after times[0], in any order. `quiet` adds
    workloads that existed through the whole window without a move: counted at every sample.
    """
    state: dict[str, State] = {}
    counts: Counter[State] = Counter(quiet or {})
    # (unix time, -kind, order, id, state before): plain tuples sort fast, newest first after
    # the reverse; at one instant a deletion is undone first, then moves newest first (higher
    # order = later id), then the creation. Ties never reach the State (ids are unique per kind).
    events: list[tuple[float, int, int, str, State | None]] = []
    for w in workloads:
        state[w.id] = w.state
        if w.deleted_at is None:
            counts[w.state] += 1
        else:
            events.append((w.deleted_at.timestamp(), -_Event.DELETED, 0, w.id, None))
        events.append((w.created_at.timestamp(), -_Event.CREATED, 0, w.id, None))
    for order, m in enumerate(moves):
        if m.workload_id in state:  # history of an id whose row is gone entirely: nothing to undo
            events.append((m.at.timestamp(), -_Event.MOVED, order, m.workload_id, m.from_state))
    events.sort(reverse=True)

    samples: list[Sample] = []
    i = 0
    for at in sorted(times, reverse=True):
        # Undo everything that happened after `at`: what is left is the fleet at `at`.
        limit = at.timestamp()
        while i < len(events) and events[i][0] > limit:
            _, what, _, wid, before = events[i]
            if what == -_Event.DELETED:
                counts[state[wid]] += 1
            elif what == -_Event.CREATED:
                counts[state[wid]] -= 1
            elif before is not None:
                counts[state[wid]] -= 1
                counts[before] += 1
                state[wid] = before
            i += 1
        samples.append(Sample(at, {s: n for s, n in counts.items() if n > 0}))
    samples.reverse()
    return samples


async def fleet_history(
    engine: AsyncEngine,
    *,
    now: datetime,
    window_s: float,
    step_s: float,
    kind: Kind | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[Sample]:
    """Counts by state over the last `window_s` seconds, one sample every `step_s`.

    Workloads that existed through the window and never moved in it are counted by the database
    (GROUP BY state); only the ones with something to undo come back as rows.
    """
    times = sample_times(now, window_s, step_s)
    start = times[0]
    moved = select(TRANSITIONS.c.workload_id).where(TRANSITIONS.c.recorded_at > start)
    tq = (
        select(
            TRANSITIONS.c.workload_id,
            TRANSITIONS.c.from_state,
            TRANSITIONS.c.to_state,
            TRANSITIONS.c.recorded_at,
        )
        .where(TRANSITIONS.c.recorded_at > start)
        .order_by(TRANSITIONS.c.id)
    )
    quiet_q = (
        select(WORKLOADS.c.state, func.count())
        .where(
            WORKLOADS.c.deleted_at.is_(None),
            WORKLOADS.c.created_at <= start,
            WORKLOADS.c.id.not_in(moved.scalar_subquery()),
        )
        .group_by(WORKLOADS.c.state)
    )
    active_q = select(
        WORKLOADS.c.id, WORKLOADS.c.state, WORKLOADS.c.created_at, WORKLOADS.c.deleted_at
    ).where(
        or_(WORKLOADS.c.deleted_at.is_(None), WORKLOADS.c.deleted_at > start),
        WORKLOADS.c.created_at <= now,
        or_(
            WORKLOADS.c.created_at > start,
            WORKLOADS.c.deleted_at.is_not(None),
            WORKLOADS.c.id.in_(moved.scalar_subquery()),
        ),
    )
    if kind is not None:
        tq = tq.where(TRANSITIONS.c.kind == kind)
        quiet_q = quiet_q.where(WORKLOADS.c.kind == kind)
        active_q = active_q.where(WORKLOADS.c.kind == kind)
    if labels:  # a key's labels: only the workloads carrying all of them
        pairs = tuple(labels.items())
        tq = tq.where(TRANSITIONS.c.workload_id.in_(ids_carrying(pairs)))
        quiet_q = quiet_q.where(*carrying(pairs))
        active_q = active_q.where(*carrying(pairs))
    async with reading(engine) as conn:
        if not is_sqlite(engine.url):
            # One snapshot for the three reads: a transition committing in between must not be
            # seen by one and missed by another. (SQLite has one writer; WAL readers see a
            # consistent database per statement, and a commit in between costs one sample.)
            await conn.execution_options(isolation_level="REPEATABLE READ")
        quiet = {State(st): int(n) for st, n in await conn.execute(quiet_q)}
        workloads = [
            WorkloadNow(r.id, State(r.state), r.created_at, r.deleted_at)
            for r in await conn.execute(active_q)
        ]
        moves = [
            Move(r.workload_id, State(r.from_state), State(r.to_state), r.recorded_at)
            for r in await conn.execute(tq)
        ]
    return reconstruct(workloads, moves, times, quiet=quiet)


def history_out(samples: Sequence[Sample], window_s: float, step_s: float) -> reports.FleetHistory:
    """What GET /v1/reports/history answers."""
    seen = {s for sample in samples for s in sample.counts}
    return reports.FleetHistory(
        window_s=window_s,
        step_s=step_s,
        states=[s for s in State if s in seen],  # lifecycle order, for a stable legend
        samples=[reports.HistorySample(at=s.at.isoformat(), counts=s.counts) for s in samples],
    )
