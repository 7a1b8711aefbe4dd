"""The stale-workload report: who is silent, unreachable or lost, worst first.

Candidates come from where they are cheap to find, never from a scan of every workload:
- Redis `last_seen` (ZRANGEBYSCORE below now - STATUSD_HEARTBEAT_TTL): silent workloads;
- Redis `pending_since` (below now - STATUSD_START_TIMEOUT): registered, never heard from;
- SQL `kind IN (...) AND state IN ('UNREACHABLE','LOST')` (index ix_workloads_kind_state).
Only when Redis tracks fewer workloads than the database has live ones (Redis lost its data) does
the report fall back to the persisted `last_seen_at` in SQL for the ones Redis does not know.

Order ("worst first"): LOST, then UNREACHABLE, then stale; within each group the longest silent
first (largest `stale_for_s`), then by id so the order is stable.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Row

from statusd import dependencies, flaps, liveness, maintenance, silences
from statusd.alerting import FlapPolicy
from statusd.db import reading
from statusd.dependencies import ParentWatch
from statusd.hearing import read_hearing
from statusd.keys import Keys
from statusd.lifecycle import CONTACT_STATES, FINAL_STATES, Kind, State
from statusd.maintenance import Excuses
from statusd.schema.queries import StaleQuery
from statusd.selfwatch import DisruptionMode
from statusd.settings import Settings
from statusd.staleness import Cutoffs, Facts, Judge, StaleReason
from statusd.tables import WORKLOADS

SQL_IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's and asyncpg's parameter limits
CSV_FIELDS = (
    "id",
    "kind",
    "state",
    "reason",
    "stale_for_s",
    "last_seen_at",
    "state_since",
    "poll_failures",
    "last_poll_error",
    "labels",
    "flapping",
    "silenced",
    "suppressed_by",
)


_RANK = {
    StaleReason.LOST: 0,
    StaleReason.UNREACHABLE: 1,
    StaleReason.STALE: 2,
    StaleReason.NEVER_SEEN: 2,
}


@dataclass(frozen=True, slots=True)
class StaleFilter:
    kinds: tuple[Kind, ...] = ()  # empty: every kind
    labels: tuple[tuple[str, str], ...] = ()  # all must match
    older_than_s: float = 0.0  # minimum stale_for_s

    def matches_labels(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.labels)


def stale_filter(query: StaleQuery) -> StaleFilter:
    """The report's filter from its query (GET /v1/reports/stale, `statusd report stale`)."""
    return StaleFilter(kinds=query.kinds, labels=query.labels, older_than_s=query.older_than)


@dataclass(frozen=True, slots=True)
class StaleRow:
    id: str
    kind: str
    state: str
    reason: str
    labels: dict[str, str]
    last_seen_at: str | None  # ISO 8601 UTC; None when never seen
    stale_for_s: float  # seconds since the last sign of life (since registration if never seen)
    poll_failures: int  # consecutive failed polls
    last_poll_error: str | None
    state_since: str  # when it entered its current state (state_changed_at)
    flapping: bool = False  # statusd.alerting: its flaps raise no alerts
    silenced: bool = False  # a silence covers it: tracked, no alerts
    suppressed_by: str | None = None  # its parent, down: its alerts are held (statusd.dependencies)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Candidates:
    seen: dict[str, float] = field(default_factory=dict)  # id -> last sign of life (Redis)
    pending: dict[str, float] = field(default_factory=dict)  # id -> registered at (Redis)


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


async def _redis_candidates(redis: Redis, keys: Keys, judge: Judge) -> _Candidates:
    cut = judge.cutoffs()
    seen, pending = await asyncio.gather(
        liveness.at_most(redis, keys, keys.last_seen, Cutoffs.exclusive(cut.last_seen_before)),
        liveness.at_most(redis, keys, keys.pending_since, Cutoffs.exclusive(cut.pending_before)),
    )
    return _Candidates(seen=dict(seen), pending=dict(pending))


def _chunks(items: Sequence[str], size: int = SQL_IN_CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _rows(engine: Any, flt: StaleFilter, ids: Sequence[str]) -> list[Row[Any]]:
    kinds = list(flt.kinds or tuple(Kind))
    live = [WORKLOADS.c.deleted_at.is_(None), WORKLOADS.c.state.notin_(list(FINAL_STATES))]
    rows: dict[str, Row[Any]] = {}
    async with reading(engine) as conn:
        contact = select(WORKLOADS).where(
            WORKLOADS.c.kind.in_(kinds), WORKLOADS.c.state.in_(list(CONTACT_STATES)), *live
        )
        for row in await conn.execute(contact):
            rows[row.id] = row
        for chunk in _chunks([i for i in ids if i not in rows]):
            query = select(WORKLOADS).where(
                WORKLOADS.c.id.in_(list(chunk)), WORKLOADS.c.kind.in_(kinds), *live
            )
            for row in await conn.execute(query):
                rows[row.id] = row
    return list(rows.values())


async def _redis_is_incomplete(redis: Redis, keys: Keys, engine: Any) -> bool:
    """True when Redis tracks fewer workloads than SQL has live ones (e.g. Redis lost its data)."""
    tracked = sum(await liveness.tracked(redis, keys))
    async with reading(engine) as conn:
        live = (
            await conn.execute(
                select(func.count())
                .select_from(WORKLOADS)
                .where(
                    WORKLOADS.c.deleted_at.is_(None), WORKLOADS.c.state.notin_(list(FINAL_STATES))
                )
            )
        ).scalar_one()
    return int(tracked) < int(live)


async def _sql_fallback(
    redis: Redis, keys: Keys, judge: Judge, engine: Any, flt: StaleFilter
) -> list[Row[Any]]:
    """Live workloads whose persisted last_seen_at is stale and that Redis does not know at all."""
    cut = judge.cutoffs()
    seen_cut = datetime.fromtimestamp(cut.last_seen_before, UTC)
    start_cut = datetime.fromtimestamp(cut.pending_before, UTC)
    query = select(WORKLOADS).where(
        WORKLOADS.c.deleted_at.is_(None),
        WORKLOADS.c.state.notin_(list(FINAL_STATES | CONTACT_STATES)),
        WORKLOADS.c.kind.in_(list(flt.kinds or tuple(Kind))),
        or_(
            WORKLOADS.c.last_seen_at < seen_cut,
            and_(WORKLOADS.c.last_seen_at.is_(None), WORKLOADS.c.created_at < start_cut),
        ),
    )
    async with reading(engine) as conn:
        rows = list(await conn.execute(query))
    unknown: list[Row[Any]] = []
    for start in range(0, len(rows), SQL_IN_CHUNK):
        chunk = rows[start : start + SQL_IN_CHUNK]
        ids = [r.id for r in chunk]
        seen, pending = await asyncio.gather(
            liveness.scores(redis, keys, keys.last_seen, ids),
            liveness.scores(redis, keys, keys.pending_since, ids),
        )
        unknown += [
            r for r, s, p in zip(chunk, seen, pending, strict=True) if s is None and p is None
        ]
    return unknown


async def stale_report(
    settings: Settings,
    engine: Any,
    redis: Redis,
    keys: Keys,
    flt: StaleFilter = StaleFilter(),
    *,
    now: float | None = None,
) -> list[StaleRow]:
    """Every live workload that is stale, never seen past its start timeout, UNREACHABLE or LOST."""
    now = time.time() if now is None else now
    # The candidate queries use the rule's cutoffs; `_item` applies the whole rule (contact
    # states, deafness) to each row.
    judge = Judge.of(settings, await read_hearing(redis, keys), now)
    cand = await _redis_candidates(redis, keys, judge)
    rows = await _rows(engine, flt, [*cand.seen, *cand.pending])
    if await _redis_is_incomplete(redis, keys, engine):
        known = {r.id for r in rows}
        rows += [
            r for r in await _sql_fallback(redis, keys, judge, engine, flt) if r.id not in known
        ]
    # Contact-state rows came from SQL: their freshest sign of life may be in Redis.
    contact_ids = [r.id for r in rows if r.id not in cand.seen]
    fresh: dict[str, float] = {}
    if contact_ids:
        scores = await liveness.scores(redis, keys, keys.last_seen, contact_ids)
        fresh = {i: float(s) for i, s in zip(contact_ids, scores, strict=True) if s is not None}
    # A workload inside a maintenance window (or within an allowance after it) is not stale.
    excuses = Excuses.of(await maintenance.list_all(engine), datetime.fromtimestamp(now, UTC))
    items = [
        item
        for row in rows
        if (item := _item(row, cand, fresh, judge, excuses)) is not None
        and flt.matches_labels(item.labels)
        and item.stale_for_s >= flt.older_than_s
    ]
    items.sort(key=lambda i: (_RANK[StaleReason(i.reason)], -i.stale_for_s, i.id))
    watch = ParentWatch(redis, keys, settings)
    return await _marked(engine, watch, judge, rows, items)


async def _marked(
    engine: Any,
    watch: ParentWatch,
    judge: Judge,
    rows: Sequence[Row[Any]],
    items: list[StaleRow],
) -> list[StaleRow]:
    """The items with their `flapping` and `silenced` flags (from the database) and the parent
    holding their alerts (statusd.dependencies)."""
    if not items:
        return items
    listed = {i.id for i in items}
    mappings = [dict(r._mapping) for r in rows if r.id in listed]
    at = datetime.fromtimestamp(judge.now, UTC)
    policy = FlapPolicy(watch.settings.flap_max, watch.settings.flap_window)
    async with reading(engine) as conn:
        flapping = await flaps.flapping_ids(conn, mappings, policy, at)
        silenced = silences.silenced_ids(await silences.active_in(conn, at), mappings)
        suppressed = await dependencies.suppressed_by(conn, watch, mappings, judge)
    return [
        replace(
            i,
            flapping=i.id in flapping,
            silenced=i.id in silenced,
            suppressed_by=suppressed.get(i.id),
        )
        if i.id in flapping or i.id in silenced or i.id in suppressed
        else i
        for i in items
    ]


def _item(
    row: Row[Any], cand: _Candidates, fresh: dict[str, float], judge: Judge, excuses: Excuses
) -> StaleRow | None:
    state = State(row.state)
    db_seen = row.last_seen_at.timestamp() if row.last_seen_at is not None else None
    redis_seen = cand.seen.get(row.id, fresh.get(row.id))
    seen = max((t for t in (db_seen, redis_seen) if t is not None), default=None)
    registered = cand.pending.get(row.id, row.created_at.timestamp())
    labels = dict(row.labels or {})
    excused = excuses.until(row.id, row.kind, labels)
    stale = judge.staleness(Facts(state, seen, registered, quiet_until=excused))
    if stale is None:
        return None  # e.g. a poll recorded in SQL is fresher than the Redis score
    return StaleRow(
        id=row.id,
        kind=str(Kind(row.kind)),
        state=str(state),
        reason=str(stale.reason),
        labels=labels,
        last_seen_at=_iso(seen),
        stale_for_s=round(max(0.0, judge.now - stale.silent_since), 3),
        poll_failures=int(row.poll_failures or 0),
        last_poll_error=row.last_poll_error,
        state_since=row.state_changed_at.isoformat(),
    )


def disruption_json(d: DisruptionMode) -> dict[str, Any]:
    """Disruption mode as the stale report carries it (`"disruption"` in its JSON)."""
    return {
        "active": d.active,
        "since": _iso(d.since),
        "stale": d.stale,
        "tracked": d.tracked,
        "fraction": round(d.fraction, 4),
    }


def disruption_banner(d: DisruptionMode) -> str | None:
    """One line for people, or None when the mode is off."""
    if not d.active:
        return None
    return (
        f"DISRUPTION MODE since {_iso(d.since)}: {d.stale} of {d.tracked} workloads "
        f"({d.fraction:.0%}) silent at once. statusd suspects itself or the network and marks "
        "nobody UNREACHABLE or LOST until it ends."
    )


def to_csv(items: Sequence[StaleRow]) -> str:
    """CSV with a header row; labels as `k=v;k=v` so the file stays one row per workload."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for item in items:
        row = item.as_dict()
        row["labels"] = ";".join(f"{k}={v}" for k, v in sorted(item.labels.items()))
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_FIELDS})
    return out.getvalue()
