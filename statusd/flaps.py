"""Flap history read from the transitions table (the alert decision and the `flapping` flag).

A flap is a recovery from UNREACHABLE (statusd.alerting.is_flap). Reading it from history rather
than keeping a counter in Redis means the flag survives Redis data loss and needs no extra write
on the hot path; the query is per workload on the (workload_id, id) index, and only for
transitions into or out of a contact state, or for the workloads of one API page.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from statusd.alerting import FlapPolicy, flapping
from statusd.lifecycle import CONTACT_STATES, State
from statusd.tables import TRANSITIONS

SQL_IN_CHUNK = 500


async def flap_times(
    conn: AsyncConnection,
    generations: Mapping[str, int],
    since: datetime,
    *,
    before_transition: int | None = None,
) -> dict[str, list[float]]:
    """Unix times of each workload's flaps since `since`, in its current generation only
    (a re-registered id starts with a clean record); `before_transition` excludes that one and
    later."""
    out: dict[str, list[float]] = defaultdict(list)
    ids = list(generations)
    for start in range(0, len(ids), SQL_IN_CHUNK):
        query = select(
            TRANSITIONS.c.workload_id, TRANSITIONS.c.generation, TRANSITIONS.c.recorded_at
        ).where(
            TRANSITIONS.c.workload_id.in_(ids[start : start + SQL_IN_CHUNK]),
            TRANSITIONS.c.from_state == State.UNREACHABLE,
            TRANSITIONS.c.to_state.notin_(list(CONTACT_STATES)),
            TRANSITIONS.c.recorded_at >= since,
        )
        if before_transition is not None:
            query = query.where(TRANSITIONS.c.id < before_transition)
        for row in await conn.execute(query):
            if row.generation == generations[row.workload_id]:
                out[row.workload_id].append(row.recorded_at.timestamp())
    return dict(out)


async def flapping_ids(
    conn: AsyncConnection, rows: Iterable[Mapping[str, Any]], policy: FlapPolicy, now: datetime
) -> set[str]:
    """Ids of the rows (id, generation) flagged `flapping` at `now`."""
    generations = {r["id"]: int(r["generation"]) for r in rows}
    if not generations:
        return set()
    times = await flap_times(conn, generations, now - timedelta(seconds=policy.lookback_s))
    at = now.timestamp()
    return {wid for wid, flaps in times.items() if flapping(flaps, at, policy)}
