"""The committed-transitions feed: rows in id order, never skipping one that commits late.

The trap (PostgreSQL): a BIGSERIAL id is taken at INSERT, but transactions commit in any order.
Transaction A takes id 10, B takes id 11 and commits first; a reader that emits 11 and moves its
cursor to 11 never sees 10. So a reader must not move past an id that may still appear.

`HighWater` tracks the largest id at or below which every id is settled: committed (visible), or
permanently absent (its transaction rolled back). It walks the ids above the mark; at a gap it
remembers which transactions were in flight when the gap was first seen (the snapshot's xip list).
The owner of the missing id took it before that read, and apply_observation's UPDATE of the
workload row runs before its INSERT, so the owner already had an xid and is on that list. Once
every listed transaction is over (pg_xact_status), a gap that is *still* missing on a fresh read
is a rollback and is skipped. Statuses are checked BEFORE the fresh read, so an owner that
committed is always seen by it.

A transaction left open for hours would stall the feed; after STATUSD_EVENTS_MAX_HOLDBACK seconds
a gap is skipped anyway with a warning (a live view that stops is worse than one that may miss a
row the history endpoint still has).

SQLite serializes writers (BEGIN IMMEDIATE), so ids commit in order: the mark is max(id).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.access.label_sql import ids_carrying
from statusd.api.serializers import transition_json, transition_out
from statusd.db import is_sqlite, reading
from statusd.lifecycle import Kind
from statusd.schema import responses
from statusd.tables import TRANSITIONS

log = structlog.get_logger("statusd.oncall")
WALK_WINDOW = 2000  # ids examined per advance; a backlog larger than this takes several rounds
PAGE = 500  # rows per read for one stream

_PG_IDS = text(
    "SELECT pg_current_snapshot()::text AS snap, "
    "ARRAY(SELECT id FROM transitions WHERE id > :mark ORDER BY id LIMIT :n) AS ids"
)
_PG_RUNNING = text(
    "SELECT x::text FROM unnest(CAST(:xips AS text[])::xid8[]) AS x "
    "WHERE pg_xact_status(x) = 'in progress'"
)


@dataclass
class _Gap:
    in_flight: list[str]  # xids (xid8, as text) in progress when the gap was first seen
    first_seen: float  # monotonic


@dataclass
class HighWater:
    """Largest transition id with no unsettled id at or below it (see module docstring)."""

    engine: AsyncEngine
    max_holdback_s: float = 30.0
    mark: int | None = None
    gaps: dict[int, _Gap] = field(default_factory=dict)

    async def advance(self) -> int:
        """Move the mark as far as is safe now; returns it."""
        if is_sqlite(self.engine.url):
            async with reading(self.engine) as conn:
                top = (await conn.execute(select(func.max(TRANSITIONS.c.id)))).scalar()
            self.mark = int(top or 0)
            return self.mark
        if self.mark is None:
            async with reading(self.engine) as conn:
                top = (await conn.execute(select(func.max(TRANSITIONS.c.id)))).scalar()
            # Start a window below the top so transactions in flight right now are waited for.
            self.mark = max(0, int(top or 0) - WALK_WINDOW)
        while True:
            moved = await self._walk()
            if not moved:
                return self.mark

    async def _walk(self) -> bool:
        assert self.mark is not None
        async with reading(self.engine) as conn:
            finished = await self._finished_gaps(conn)
            row = (await conn.execute(_PG_IDS, {"mark": self.mark, "n": WALK_WINDOW})).one()
        ids: list[int] = list(row.ids or [])
        snap_xips = _xips(row.snap)
        start, expected = self.mark, self.mark + 1
        now = time.monotonic()
        for ident in ids:
            while expected < ident:  # `expected` is missing
                gap = self.gaps.setdefault(expected, _Gap(snap_xips, now))
                if expected in finished:
                    log.debug("events.gap_skipped", id=expected, reason="rolled back")
                elif now - gap.first_seen > self.max_holdback_s:
                    log.warning(
                        "events.gap_skipped",
                        id=expected,
                        reason="held back too long",
                        held_s=round(now - gap.first_seen, 1),
                    )
                else:
                    self._remember_gaps(expected + 1, ids, snap_xips, now)
                    return self.mark != start
                self.gaps.pop(expected, None)
                self.mark = expected
                expected += 1
            self.gaps.pop(ident, None)
            self.mark, expected = ident, ident + 1
        return self.mark != start and len(ids) == WALK_WINDOW

    def _remember_gaps(self, begin: int, ids: list[int], xips: list[str], now: float) -> None:
        """Start the clock (and record in-flight xids) for every later gap seen in this read too."""
        present = set(ids)
        for ident in range(begin, ids[-1] if ids else begin):
            if ident not in present:
                self.gaps.setdefault(ident, _Gap(xips, now))

    async def _finished_gaps(self, conn: Any) -> set[int]:
        """Gaps whose possible owners (in flight when first seen) have all ended."""
        done: set[int] = set()
        cache: dict[tuple[str, ...], bool] = {}
        for ident, gap in self.gaps.items():
            key = tuple(gap.in_flight)
            if key not in cache:
                if not key:
                    cache[key] = True
                else:
                    running = (await conn.execute(_PG_RUNNING, {"xips": list(key)})).all()
                    cache[key] = not running
            if cache[key]:
                done.add(ident)
        return done


def _xips(snapshot: str) -> list[str]:
    """`xmin:xmax:xip1,xip2` -> ["xip1", "xip2"]."""
    parts = snapshot.split(":")
    return [x for x in parts[2].split(",") if x] if len(parts) == 3 else []


@dataclass(frozen=True, slots=True)
class FeedFilter:
    kind: Kind | None = None
    workload_id: str | None = None
    labels: tuple[tuple[str, str], ...] = ()  # only workloads carrying all of them

    def where(self, query: Any) -> Any:
        """`query` (over transitions) narrowed by this filter."""
        if self.kind is not None:
            query = query.where(TRANSITIONS.c.kind == self.kind)
        if self.workload_id is not None:
            query = query.where(TRANSITIONS.c.workload_id == self.workload_id)
        if self.labels:
            query = query.where(TRANSITIONS.c.workload_id.in_(ids_carrying(self.labels)))
        return query


def event_payload(row: Any) -> dict[str, Any]:
    """One transition as the SSE `data:` JSON (and in /v1/reports/transitions): the API's shape."""
    return transition_json(row._mapping)


async def read_after(
    engine: AsyncEngine, cursor: int, upto: int, flt: FeedFilter, limit: int = PAGE
) -> list[dict[str, Any]]:
    """Transitions with cursor < id <= upto matching `flt`, in id order."""
    query = flt.where(
        select(TRANSITIONS).where(TRANSITIONS.c.id > cursor, TRANSITIONS.c.id <= upto)
    )
    async with reading(engine) as conn:
        rows = await conn.execute(query.order_by(TRANSITIONS.c.id).limit(limit))
        return [event_payload(r) for r in rows]


async def recent(
    engine: AsyncEngine, upto: int, limit: int, flt: FeedFilter
) -> list[responses.Transition]:
    """The newest `limit` transitions at or below `upto`, newest first."""
    query = flt.where(select(TRANSITIONS).where(TRANSITIONS.c.id <= upto))
    async with reading(engine) as conn:
        rows = await conn.execute(query.order_by(TRANSITIONS.c.id.desc()).limit(limit))
        return [transition_out(dict(r._mapping)) for r in rows]
