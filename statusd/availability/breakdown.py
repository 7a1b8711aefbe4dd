"""The availability report: per workload and per group (kind, or a label key), seconds in each
state group and availability = up / (up + down), for a window [from, to).

Live registrations are timed from their transitions; registrations whose history retention has
deleted come from their rollup days. Time no ingest process was listening is left out of every
group (`unheard_s`), and so is time a maintenance window covering the workload was in force
(`maintenance_s`, statusd.maintenance): planned downtime counts neither up nor down.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.availability.history import (
    DAY_S,
    Selection,
    day_span,
    live_timelines,
    rolled_days,
)
from statusd.availability.outages import outages_between
from statusd.availability.timeline import (
    Excluded,
    Span,
    StateGroup,
    Tally,
    segments,
    tally,
)
from statusd.availability.windows import maintenance_spans
from statusd.db import is_sqlite, reading
from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.schema.queries import AvailabilityQuery

KIND_GROUP = "kind"
LABEL_GROUP_PREFIX = "label:"


@dataclass(slots=True)
class WorkloadFigures:
    id: str
    kind: Kind
    labels: dict[str, str]
    tally: Tally = field(default_factory=Tally)


@dataclass(frozen=True, slots=True)
class AvailabilityResult:
    window: Span
    group_by: str | None
    workloads: list[WorkloadFigures]

    def groups(self) -> dict[str | None, tuple[int, Tally]]:
        """Group value -> (workloads, summed tally); None holds those without the label."""
        out: dict[str | None, tuple[int, Tally]] = {}
        if self.group_by is None:
            return out
        for w in self.workloads:
            key = group_value(self.group_by, w.kind, w.labels)
            n, t = out.get(key, (0, Tally()))
            t.add(w.tally)
            out[key] = (n + 1, t)
        return dict(sorted(out.items(), key=lambda kv: (kv[0] is None, kv[0] or "")))

    def total(self) -> Tally:
        t = Tally()
        for w in self.workloads:
            t.add(w.tally)
        return t


def group_value(group_by: str, kind: Kind, labels: dict[str, str]) -> str | None:
    if group_by == KIND_GROUP:
        return kind.value
    return labels.get(group_by.removeprefix(LABEL_GROUP_PREFIX))


async def availability(
    engine: AsyncEngine,
    redis: Redis | None,
    keys: Keys | None,
    window: Span,
    scope: Selection | None = None,
    group_by: str | None = None,
    *,
    now: float | None = None,
) -> AvailabilityResult:
    """The figures for `window` (its end is capped at now: the future has no figures)."""
    now = time.time() if now is None else now
    window = Span(window.start, min(window.end, max(window.start, now)))
    figures: dict[str, WorkloadFigures] = {}
    async with reading(engine) as conn:
        if not is_sqlite(engine.url):
            # One snapshot for every read: a prune committing in between must not make one
            # registration count twice (rollup and history) or not at all.
            await conn.execution_options(isolation_level="REPEATABLE READ")
        outages = await outages_between(conn, redis, keys, window)
        planned = await maintenance_spans(conn, window)
        scope = scope or Selection()
        for tl in await live_timelines(conn, window, scope):
            start = tl.start or tl.moves[0].at
            pieces = segments(start, tl.moves, min(tl.end, window.end), tl.first_state)
            fig = figures.setdefault(tl.workload_id, WorkloadFigures(tl.workload_id, tl.kind, {}))
            fig.labels = tl.labels
            excluded = {
                Excluded.UNHEARD: outages,
                Excluded.MAINTENANCE: planned.of(tl.workload_id, tl.kind, tl.labels),
            }
            fig.tally.add(tally(pieces, window, excluded))
        for day in await rolled_days(conn, window, scope):
            span = day_span(day.day)
            covered = max(0.0, min(span.end, window.end) - max(span.start, window.start))
            fig = figures.setdefault(
                day.workload_id, WorkloadFigures(day.workload_id, day.kind, {})
            )
            if not fig.labels:
                fig.labels = day.labels
            rolled = Tally(
                dict(day.seconds),
                {Excluded.UNHEARD: day.unheard_s, Excluded.MAINTENANCE: day.maintenance_s},
            )
            fig.tally.add(rolled, covered / DAY_S)
    kept = [f for f in figures.values() if f.tally.counted > 0 or any(f.tally.excluded.values())]
    kept.sort(key=lambda f: f.id)
    return AvailabilityResult(window, group_by, kept)


def rounded(seconds: float) -> float:
    return round(seconds, 3)


def figures_json(t: Tally) -> dict[str, object]:
    """The figures every row of the report carries."""
    groups = t.group_seconds()
    share = t.availability()
    return {
        "seconds": {g.value: rounded(groups[g]) for g in StateGroup},
        "states": {s.value: rounded(t.states[s]) for s in State if t.states.get(s)},
        "unheard_s": rounded(t.excluded.get(Excluded.UNHEARD, 0.0)),
        "maintenance_s": rounded(t.excluded.get(Excluded.MAINTENANCE, 0.0)),
        "availability": None if share is None else round(share, 6),
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def report_json(result: AvailabilityResult) -> dict[str, object]:
    return {
        "from": _iso(result.window.start),
        "to": _iso(result.window.end),
        "group_by": result.group_by,
        "workloads": [
            {"id": w.id, "kind": w.kind.value, "labels": w.labels, **figures_json(w.tally)}
            for w in result.workloads
        ],
        "groups": [
            {"group": key, "workloads": n, **figures_json(t)}
            for key, (n, t) in result.groups().items()
        ],
        "total": {"workloads": len(result.workloads), **figures_json(result.total())},
    }


CSV_FIELDS = (
    "scope",
    "name",
    "kind",
    "workloads",
    *(f"{g.value}_s" for g in StateGroup),
    "unheard_s",
    "maintenance_s",
    "availability",
)


def _csv_row(scope: str, name: str, kind: str, n: int, t: Tally) -> dict[str, object]:
    groups = t.group_seconds()
    share = t.availability()
    return {
        "scope": scope,
        "name": name,
        "kind": kind,
        "workloads": n,
        **{f"{g.value}_s": rounded(groups[g]) for g in StateGroup},
        "unheard_s": rounded(t.excluded.get(Excluded.UNHEARD, 0.0)),
        "maintenance_s": rounded(t.excluded.get(Excluded.MAINTENANCE, 0.0)),
        "availability": "" if share is None else round(share, 6),
    }


def to_csv(result: AvailabilityResult) -> str:
    """One row per workload, then one per group, then the total (`scope` says which)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for w in result.workloads:
        writer.writerow(_csv_row("workload", w.id, w.kind.value, 1, w.tally))
    for key, (n, t) in result.groups().items():
        writer.writerow(_csv_row("group", key or "", "", n, t))
    writer.writerow(_csv_row("total", "", "", len(result.workloads), result.total()))
    return out.getvalue()


def query_window(query: AvailabilityQuery) -> tuple[Span, Selection]:
    """The window and scope a parsed query asks for (the API's and the CLI's)."""
    start, end = query.window
    scope = Selection(query.kinds, query.labels, tuple(dict.fromkeys(query.id)))
    return Span(start.timestamp(), end.timestamp()), scope
