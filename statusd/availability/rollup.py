"""The daily rollup: a registration's seconds per state on each UTC day it counted, written
before retention deletes its history. Reports over a pruned period read these rows instead and
give the same figures (exactly for whole days; a day cut by the report's from/to is prorated).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from statusd.availability.history import (
    IN_CHUNK,
    MOVE_COLUMNS,
    Timeline,
    add_moves,
    day_span,
    days_between,
    rolled_registrations,
)
from statusd.availability.outages import outages_between
from statusd.availability.timeline import Excluded, Span, StateMove, segments, tally
from statusd.availability.windows import maintenance_spans
from statusd.lifecycle import Kind, State
from statusd.tables import AVAILABILITY_DAYS, TRANSITIONS

Registration = tuple[str, int]  # (workload id, generation)


def timeline_of(
    reg: Registration,
    row: Any,
    moves: Mapping[Registration, list[StateMove]],
    kinds: Mapping[str, Kind],
) -> Timeline | None:
    """A registration's whole life from its history and its workload row (None: nothing known).
    An earlier registration ends when the next one began (its deregistration time is not kept)."""
    wid, gen = reg
    mine = moves.get(reg, [])
    current = row is not None and int(row.generation) == gen
    kind = Kind(row.kind) if row is not None else kinds.get(wid)
    if kind is None or (not mine and not current):
        return None
    labels = dict(row.labels or {}) if row is not None else {}
    first = mine[0].from_state if mine else State.PENDING
    if current:
        end = row.deleted_at.timestamp() if row.deleted_at is not None else float("inf")
        return Timeline(wid, gen, kind, labels, row.created_at, first, end, mine)
    if row is not None and int(row.generation) == gen + 1:
        end = float(row.created_at.timestamp())
    else:
        following = moves.get((wid, gen + 1))
        end = following[0].at.timestamp() if following else float("inf")
    return Timeline(wid, gen, kind, labels, None, first, end, mine)


async def roll_up(
    conn: AsyncConnection,
    rows: Mapping[str, Any],
    registrations: Sequence[Registration],
    now: float,
) -> int:
    """Write the rollup days of `registrations` (inside the caller's transaction); `rows` are
    their workload rows by id (absent: the row is gone). Idempotent: a registration already
    rolled up is left alone. Returns the days written."""
    done = await rolled_registrations(conn, [wid for wid, _ in registrations])
    todo = [r for r in registrations if r not in done]
    if not todo:
        return 0
    moves: dict[Registration, list[StateMove]] = defaultdict(list)
    kinds: dict[str, Kind] = {}
    wanted = list(dict.fromkeys(registrations))
    for i in range(0, len(wanted), IN_CHUNK):
        query = (
            select(*MOVE_COLUMNS)
            .where(
                tuple_(TRANSITIONS.c.workload_id, TRANSITIONS.c.generation).in_(
                    wanted[i : i + IN_CHUNK]
                )
            )
            .order_by(TRANSITIONS.c.id)
        )
        add_moves(await conn.execute(query), moves, kinds)
    lives = []
    for reg in todo:
        tl = timeline_of(reg, rows.get(reg[0]), moves, kinds)
        if tl is None:
            continue
        start = tl.start or tl.moves[0].at
        pieces = segments(start, tl.moves, min(tl.end, now), tl.first_state)
        end = pieces[-1][1].end if pieces else start.timestamp()
        lives.append((tl, pieces, Span(start.timestamp(), end)))
    if not lives:
        return 0
    covered = Span(min(s.start for *_, s in lives), max(s.end for *_, s in lives))
    outages = await outages_between(conn, None, None, covered)
    planned = await maintenance_spans(conn, covered)
    out: list[dict[str, Any]] = []
    for tl, pieces, life in lives:
        excluded = {
            Excluded.UNHEARD: outages,
            Excluded.MAINTENANCE: planned.of(tl.workload_id, tl.kind, tl.labels),
        }
        days: list[dict[str, Any]] = []
        for day in days_between(life.start, life.end):
            got = tally(pieces, day_span(day), excluded)
            # Always one row, even for a registration that never counted a second: it marks
            # the registration as rolled up, so its history is never counted twice.
            if not got.states and not got.excluded and days:
                continue
            days.append(
                {
                    "workload_id": tl.workload_id,
                    "generation": tl.generation,
                    "day": day,
                    "kind": tl.kind,
                    "labels": tl.labels,
                    "seconds": {str(s): v for s, v in got.states.items()},
                    "unheard_s": got.excluded.get(Excluded.UNHEARD, 0.0),
                    "maintenance_s": got.excluded.get(Excluded.MAINTENANCE, 0.0),
                }
            )
        out += days
    for i in range(0, len(out), IN_CHUNK):
        await conn.execute(AVAILABILITY_DAYS.insert(), out[i : i + IN_CHUNK])
    return len(out)
