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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.db import reading
from statusd.lifecycle import Kind, State
from statusd.models import Transition, Workload

_W = Workload.__table__  # type: ignore[attr-defined]
_T = Transition.__table__  # type: ignore[attr-defined]

MAX_SAMPLES = 360  # a picture wider than this says nothing more, and costs memory per request
MAX_WINDOW_S = 7 * 86400


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
    workloads: Iterable[WorkloadNow], moves: Iterable[Move], times: Sequence[datetime]
) -> list[Sample]:
    """Counts by state at each of `times` (ascending, none after the rows were read).

    `moves` must hold every transition recorded after times[0], in any order.
    """
    state: dict[str, State] = {}
    counts: Counter[State] = Counter()
    events: list[tuple[datetime, _Event, int, str, State | None]] = []
    for w in workloads:
        state[w.id] = w.state
        if w.deleted_at is None:
            counts[w.state] += 1
        else:
            events.append((w.deleted_at, _Event.DELETED, 0, w.id, None))
        events.append((w.created_at, _Event.CREATED, 0, w.id, None))
    for order, m in enumerate(moves):
        if m.workload_id in state:  # history of an id whose row is gone entirely: nothing to undo
            events.append((m.at, _Event.MOVED, order, m.workload_id, m.from_state))
    # Newest first; at one instant, moves newest first (higher order = later id).
    events.sort(key=lambda e: (e[0], -e[1], e[2]), reverse=True)

    samples: list[Sample] = []
    pending = sorted(times, reverse=True)
    i = 0
    for at in pending:
        # Undo everything that happened after `at`: what is left is the fleet at `at`.
        while i < len(events) and events[i][0] > at:
            _, what, _, wid, before = events[i]
            if what is _Event.DELETED:
                counts[state[wid]] += 1
            elif what is _Event.CREATED:
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
    engine: AsyncEngine, *, now: datetime, window_s: float, step_s: float, kind: Kind | None = None
) -> list[Sample]:
    """Counts by state over the last `window_s` seconds, one sample every `step_s`."""
    times = sample_times(now, window_s, step_s)
    start = times[0]
    wq = select(_W.c.id, _W.c.state, _W.c.created_at, _W.c.deleted_at).where(
        or_(_W.c.deleted_at.is_(None), _W.c.deleted_at > start), _W.c.created_at <= now
    )
    tq = (
        select(_T.c.workload_id, _T.c.from_state, _T.c.to_state, _T.c.recorded_at)
        .where(_T.c.recorded_at > start)
        .order_by(_T.c.id)
    )
    if kind is not None:
        wq = wq.where(_W.c.kind == kind)
        tq = tq.where(_T.c.kind == kind)
    # One read transaction: the rows and the moves agree with each other (PostgreSQL snapshot,
    # SQLite's single writer).
    async with reading(engine) as conn:
        workloads = [
            WorkloadNow(r.id, State(r.state), r.created_at, r.deleted_at)
            for r in await conn.execute(wq)
        ]
        moves = [
            Move(r.workload_id, State(r.from_state), State(r.to_state), r.recorded_at)
            for r in await conn.execute(tq)
        ]
    return reconstruct(workloads, moves, times)


def history_json(samples: Sequence[Sample], window_s: float, step_s: float) -> dict[str, Any]:
    """The JSON shape of GET /v1/reports/history."""
    seen = {s for sample in samples for s in sample.counts}
    return {
        "window_s": window_s,
        "step_s": step_s,
        "states": [s.value for s in State if s in seen],  # lifecycle order, for a stable legend
        "samples": [
            {"at": s.at.isoformat(), "counts": {k.value: v for k, v in s.counts.items()}}
            for s in samples
        ],
    }
