"""The daily rollup: one registration's seconds per state on each UTC day it counted, written
before retention deletes its history. Reports over a pruned period read these rows instead and
give the same figures (exactly for whole days; a day cut by the report's from/to is prorated).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from statusd.availability.history import day_span, days_between, full_timeline
from statusd.availability.outages import outages_between
from statusd.availability.timeline import Excluded, Span, segments, tally
from statusd.models import AvailabilityDay, Workload

_D = AvailabilityDay.__table__  # type: ignore[attr-defined]
_W = Workload.__table__  # type: ignore[attr-defined]


async def roll_up(conn: AsyncConnection, workload_id: str, generation: int, now: float) -> int:
    """Write the rollup days of one registration (inside the caller's transaction). Idempotent:
    a registration already rolled up is left alone. Returns the days written."""
    done = (
        await conn.execute(
            select(_D.c.id)
            .where(_D.c.workload_id == workload_id, _D.c.generation == generation)
            .limit(1)
        )
    ).first()
    if done is not None:
        return 0
    row = (await conn.execute(select(_W).where(_W.c.id == workload_id))).first()
    timeline = await full_timeline(conn, workload_id, generation, row)
    if timeline is None:
        return 0
    start = timeline.start or timeline.moves[0].at
    pieces = segments(start, timeline.moves, min(timeline.end, now), timeline.first_state)
    life = Span(start.timestamp(), pieces[-1][1].end if pieces else start.timestamp())
    outages = await outages_between(conn, None, None, life)
    excluded = {Excluded.UNHEARD: outages}
    rows: list[dict[str, Any]] = []
    for day in days_between(life.start, life.end):
        t = tally(pieces, day_span(day), excluded)
        if not t.states and not t.excluded and rows:
            continue
        rows.append(
            {
                "workload_id": workload_id,
                "generation": generation,
                "day": day,
                "kind": timeline.kind,
                "labels": timeline.labels,
                "seconds": {str(s): v for s, v in t.states.items()},
                "unheard_s": t.excluded.get(Excluded.UNHEARD, 0.0),
                "maintenance_s": t.excluded.get(Excluded.MAINTENANCE, 0.0),
            }
        )
    # Always one row, even for a registration that never counted a second: it marks the
    # registration as rolled up, so its history is never read (or rolled up) twice.
    await conn.execute(_D.insert(), rows)
    return len(rows)


async def roll_up_all(
    conn: AsyncConnection, registrations: Sequence[tuple[str, int]], now: float
) -> int:
    written = 0
    for workload_id, generation in registrations:
        written += await roll_up(conn, workload_id, generation, now)
    return written
