"""Reading a window of history as timelines: the live transitions and workload rows, plus the
daily rollup of registrations whose history retention has already deleted.

Per registration (id + generation), exactly one source counts: once a registration has rollup
days, its remaining transitions (retention may be midway through deleting them) are ignored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from statusd.availability.timeline import Span, StateMove
from statusd.lifecycle import FINAL_STATES, Kind, State
from statusd.tables import AVAILABILITY_DAYS, TRANSITIONS, WORKLOADS

DAY_S = 86400.0
IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Selection:
    """Which workloads a report covers (all set filters must match)."""

    kinds: tuple[Kind, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    ids: tuple[str, ...] = ()

    def matches(self, kind: Kind, labels: dict[str, str]) -> bool:
        return (not self.kinds or kind in self.kinds) and all(
            labels.get(k) == v for k, v in self.labels
        )


@dataclass(slots=True)
class Timeline:
    """One registration's life as far as the window needs it."""

    workload_id: str
    generation: int
    kind: Kind
    labels: dict[str, str]
    start: datetime | None  # None: known only from its first move
    first_state: State
    end: float  # unix seconds: deregistered, registered again, or the window's end
    moves: list[StateMove] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RolledDay:
    workload_id: str
    generation: int
    day: date
    kind: Kind
    labels: dict[str, str]
    seconds: dict[State, float]
    unheard_s: float
    maintenance_s: float


def day_span(day: date) -> Span:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    return Span(start, start + DAY_S)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


async def rolled_days(conn: AsyncConnection, window: Span, scope: Selection) -> list[RolledDay]:
    first = _at(window.start).date()
    last = _at(window.end - 1e-6).date() if window.end > window.start else first
    query = select(AVAILABILITY_DAYS).where(
        AVAILABILITY_DAYS.c.day >= first, AVAILABILITY_DAYS.c.day <= last
    )
    if scope.kinds:
        query = query.where(AVAILABILITY_DAYS.c.kind.in_(list(scope.kinds)))
    if scope.ids:
        query = query.where(AVAILABILITY_DAYS.c.workload_id.in_(list(scope.ids)))
    days = []
    for r in await conn.execute(query):
        kind, labels = Kind(r.kind), dict(r.labels or {})
        if not scope.matches(kind, labels):
            continue
        days.append(
            RolledDay(
                r.workload_id,
                int(r.generation),
                r.day if isinstance(r.day, date) else date.fromisoformat(str(r.day)),
                kind,
                labels,
                {State(s): float(v) for s, v in (r.seconds or {}).items()},
                float(r.unheard_s),
                float(r.maintenance_s),
            )
        )
    return days


async def rolled_registrations(conn: AsyncConnection, ids: Sequence[str]) -> set[tuple[str, int]]:
    """(id, generation) pairs that have rollup days: their history no longer counts."""
    out: set[tuple[str, int]] = set()
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), IN_CHUNK):
        chunk = unique[i : i + IN_CHUNK]
        query = select(AVAILABILITY_DAYS.c.workload_id, AVAILABILITY_DAYS.c.generation).where(
            AVAILABILITY_DAYS.c.workload_id.in_(chunk)
        )
        out |= {(r.workload_id, int(r.generation)) for r in await conn.execute(query.distinct())}
    return out


def _state_before(at: datetime) -> Any:
    """The state a registration was left in by its last transition at or before `at`."""
    return (
        select(TRANSITIONS.c.to_state)
        .where(
            TRANSITIONS.c.workload_id == WORKLOADS.c.id,
            TRANSITIONS.c.generation == WORKLOADS.c.generation,
            TRANSITIONS.c.recorded_at <= at,
        )
        .order_by(TRANSITIONS.c.id.desc())
        .limit(1)
        .correlate(WORKLOADS)
        .scalar_subquery()
    )


async def _state_of(
    conn: AsyncConnection, workload_id: str, generation: int, at: datetime
) -> State | None:
    row = (
        await conn.execute(
            select(TRANSITIONS.c.to_state)
            .where(
                TRANSITIONS.c.workload_id == workload_id,
                TRANSITIONS.c.generation == generation,
                TRANSITIONS.c.recorded_at <= at,
            )
            .order_by(TRANSITIONS.c.id.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else State(row.to_state)


# The transition columns a registration's moves are read from (`add_moves`).
MOVE_COLUMNS = (
    TRANSITIONS.c.workload_id,
    TRANSITIONS.c.generation,
    TRANSITIONS.c.kind,
    TRANSITIONS.c.from_state,
    TRANSITIONS.c.to_state,
    TRANSITIONS.c.recorded_at,
)


def add_moves(
    rows: Iterable[Any],
    moves: dict[tuple[str, int], list[StateMove]],
    kinds: dict[str, Kind],
) -> None:
    """Append each transition row (MOVE_COLUMNS, oldest first) to its registration's moves, and
    note its workload's kind."""
    for t in rows:
        moves[(t.workload_id, int(t.generation))].append(
            StateMove(t.recorded_at, State(t.from_state), State(t.to_state))
        )
        kinds[t.workload_id] = Kind(t.kind)


async def live_timelines(conn: AsyncConnection, window: Span, scope: Selection) -> list[Timeline]:
    """Every registration that existed during `window` and is not rolled up, with its moves in
    the window and the state it was in when the window began."""
    lo, hi = _at(window.start), _at(window.end)
    wq = select(
        WORKLOADS.c.id,
        WORKLOADS.c.kind,
        WORKLOADS.c.labels,
        WORKLOADS.c.generation,
        WORKLOADS.c.created_at,
        WORKLOADS.c.deleted_at,
        _state_before(lo).label("state_at_start"),
    ).where(
        # Registered after the window, an id's earlier registration may still have lived in it.
        or_(WORKLOADS.c.created_at < hi, WORKLOADS.c.generation > 1),
        or_(WORKLOADS.c.deleted_at.is_(None), WORKLOADS.c.deleted_at > lo),
        or_(WORKLOADS.c.state.notin_(list(FINAL_STATES)), WORKLOADS.c.state_changed_at > lo),
    )
    tq = (
        select(*MOVE_COLUMNS)
        .where(TRANSITIONS.c.recorded_at > lo, TRANSITIONS.c.recorded_at <= hi)
        .order_by(TRANSITIONS.c.id)
    )
    if scope.kinds:
        wq = wq.where(WORKLOADS.c.kind.in_(list(scope.kinds)))
        tq = tq.where(TRANSITIONS.c.kind.in_(list(scope.kinds)))
    if scope.ids:
        wq = wq.where(WORKLOADS.c.id.in_(list(scope.ids)))
        tq = tq.where(TRANSITIONS.c.workload_id.in_(list(scope.ids)))
    rows = {r.id: r for r in await conn.execute(wq)}
    moves: dict[tuple[str, int], list[StateMove]] = defaultdict(list)
    kinds: dict[str, Kind] = {}
    add_moves(await conn.execute(tq), moves, kinds)
    # Labels of a registration are its row's (an older generation's own labels are not kept).
    known = {wid for wid, _ in moves} | set(rows)
    labels_of: dict[str, dict[str, str]] = {}
    missing = [wid for wid in known if wid not in rows]
    for i in range(0, len(missing), IN_CHUNK):
        chunk = missing[i : i + IN_CHUNK]
        for r in await conn.execute(
            select(WORKLOADS.c.id, WORKLOADS.c.labels).where(WORKLOADS.c.id.in_(chunk))
        ):
            labels_of[r.id] = dict(r.labels or {})
    rolled = await rolled_registrations(conn, list(known))

    keys: set[tuple[str, int]] = set(moves)
    for wid, r in rows.items():
        keys.add((wid, int(r.generation)))
        # The registration before the current one may have lived into the window.
        if int(r.generation) > 1 and r.created_at > lo:
            keys.add((wid, int(r.generation) - 1))
    timelines: list[Timeline] = []
    for wid, gen in sorted(keys - rolled):
        row = rows.get(wid)
        kind = Kind(row.kind) if row is not None else kinds.get(wid)
        labels = dict(row.labels or {}) if row is not None else labels_of.get(wid, {})
        if kind is None or not scope.matches(kind, labels):
            continue
        tl = await _timeline(conn, wid, gen, kind, labels, row, moves, window)
        if tl is not None:
            timelines.append(tl)
    return timelines


async def _timeline(
    conn: AsyncConnection,
    wid: str,
    gen: int,
    kind: Kind,
    labels: dict[str, str],
    row: Any,
    moves: dict[tuple[str, int], list[StateMove]],
    window: Span,
) -> Timeline | None:
    mine = moves.get((wid, gen), [])
    if row is not None and gen == int(row.generation):
        before = row.state_at_start
        first = State(before) if before is not None else State.PENDING
        end = row.deleted_at.timestamp() if row.deleted_at is not None else window.end
        return Timeline(wid, gen, kind, labels, row.created_at, first, end, mine)
    state = await _state_of(conn, wid, gen, _at(window.start))
    if state is None and not mine:
        return None  # nothing of it is known inside the window
    start = _at(window.start) if state is not None else None
    first = state or mine[0].from_state
    end = _next_start(wid, gen, row, moves, window.end)
    return Timeline(wid, gen, kind, labels, start, first, end, mine)


def _next_start(
    wid: str,
    gen: int,
    row: Any,
    moves: dict[tuple[str, int], list[StateMove]],
    default: float,
) -> float:
    """When the registration after `gen` began: an older registration ends there at the latest."""
    if row is not None and int(row.generation) == gen + 1:
        return float(row.created_at.timestamp())
    following = moves.get((wid, gen + 1))
    return following[0].at.timestamp() if following else default


def days_between(start: float, end: float) -> list[date]:
    first = _at(start).date()
    last = _at(max(start, end - 1e-6)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
