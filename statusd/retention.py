"""Retention: bounded storage for a service that runs for years.

What is kept is a list of table policies (`policies`), each deleting in bounded batches: one
short transaction per batch of at most STATUSD_RETAIN_BATCH rows, so no statement holds locks
for long and the heartbeat path never waits behind a prune.

- history: transitions and refused observations of workloads final or deregistered longer than
  STATUSD_RETAIN_HISTORY_DAYS (and of earlier registrations of an id registered again that long
  ago). Each registration's daily availability rollup is written first (statusd.availability.
  rollup), so availability reports give the same figures afterwards; then the rows of
  deregistered workloads go, raising the `generation` high-water mark in the same transaction.
- refused: only the newest STATUSD_RETAIN_REFUSED_PER_WORKLOAD refused observations of a workload.
- outbox: delivered rows and dead letters older than STATUSD_RETAIN_OUTBOX_DAYS (a dead letter
  replayed becomes pending again, and is kept until delivered).
- audit: audit rows older than STATUSD_RETAIN_AUDIT_DAYS.

`prune` is called by the beat task, `statusd prune` and tests alike.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import (
    Table,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd import metrics
from statusd.availability.rollup import roll_up
from statusd.db import is_sqlite, reading, transaction
from statusd.lifecycle import FINAL_STATES
from statusd.models import (
    OutboxStatus,
)
from statusd.registry import GENERATION_MARK
from statusd.settings import Settings
from statusd.tables import (
    AUDIT_EVENTS,
    HIGH_WATER_MARKS,
    OUTBOX,
    REFUSED_OBSERVATIONS,
    TRANSITIONS,
    WORKLOADS,
)

log = structlog.get_logger("statusd.retention")

DAY_S = 86400.0
WORKLOAD_PAGE = 200  # retired workloads looked at per query


class PrunedTable(StrEnum):
    """The `table` label of statusd_pruned_rows_total."""

    TRANSITIONS = "transitions"
    REFUSED = "refused_observations"
    OUTBOX = "outbox"
    AUDIT = "audit_events"
    WORKLOADS = "workloads"


@dataclass(frozen=True, slots=True)
class RetentionCutoffs:
    """The instants before which each kind of row is out of policy."""

    now: datetime
    history: datetime
    outbox: datetime
    audit: datetime
    refused_per_workload: int
    batch: int

    @classmethod
    def of(cls, settings: Settings, now: datetime) -> RetentionCutoffs:
        return cls(
            now=now,
            history=now - timedelta(days=settings.retain_history_days),
            outbox=now - timedelta(days=settings.retain_outbox_days),
            audit=now - timedelta(days=settings.retain_audit_days),
            refused_per_workload=settings.retain_refused_per_workload,
            batch=settings.retain_batch,
        )


@dataclass
class PruneReport:
    """Rows deleted (or, dry run, that would be) per table, and the batches it took."""

    dry_run: bool
    rows: dict[PrunedTable, int] = field(default_factory=dict)
    batches: dict[PrunedTable, int] = field(default_factory=dict)
    rollup_days: int = 0
    seconds: float = 0.0
    longest_batch_s: float = 0.0  # the longest single delete transaction

    def add(self, tbl: PrunedTable, rows: int, batches: int = 1) -> None:
        self.rows[tbl] = self.rows.get(tbl, 0) + rows
        self.batches[tbl] = self.batches.get(tbl, 0) + batches

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "tables": {
                t.value: {"rows": self.rows.get(t, 0), "batches": self.batches.get(t, 0)}
                for t in PrunedTable
            },
            "rollup_days": self.rollup_days,
            "seconds": round(self.seconds, 3),
            "longest_batch_s": round(self.longest_batch_s, 4),
        }


Progress = Callable[[PrunedTable, int], None]  # (table, rows so far) after each batch


@dataclass
class _PruneRun:
    engine: AsyncEngine
    cut: RetentionCutoffs
    report: PruneReport
    progress: Progress | None

    @property
    def dry(self) -> bool:
        return self.report.dry_run

    def done(self, tbl: PrunedTable, rows: int) -> None:
        self.report.add(tbl, rows, 1 if rows else 0)
        if rows and not self.dry:
            metrics.PRUNED_ROWS.labels(table=tbl.value).inc(rows)
        if self.progress is not None:
            self.progress(tbl, self.report.rows.get(tbl, 0))

    async def delete_batches(self, tbl: PrunedTable, target: Table, where: Sequence[Any]) -> int:
        """Delete what `where` selects, `batch` rows per transaction, walking the primary key
        upward (never rescanning the index entries earlier batches left dead); only count when
        dry."""
        pk = target.c.id
        if self.dry:
            async with reading(self.engine) as conn:
                n = int((await conn.execute(select(func.count()).where(*where))).scalar_one())
            self.done(tbl, n)
            return n
        total, after = 0, None
        while True:
            page = select(pk).where(*where).order_by(pk).limit(self.cut.batch)
            if after is not None:
                page = page.where(pk > after)
            began = time.monotonic()
            async with transaction(self.engine) as conn:
                ids = list((await conn.execute(page)).scalars())
                if ids:
                    await conn.execute(target.delete().where(pk.in_(ids)))
            took = time.monotonic() - began
            self.report.longest_batch_s = max(self.report.longest_batch_s, took)
            total += len(ids)
            self.done(tbl, len(ids))
            if len(ids) < self.cut.batch:
                return total
            after = ids[-1]


Policy = Callable[[_PruneRun], Awaitable[None]]


# -- history -------------------------------------------------------------------------------------


class Retired(StrEnum):
    """Why a workload's history is out of policy; each is found by its own index-driven query."""

    DEREGISTERED = "deregistered"  # deregistered longer ago than the history is kept
    FINAL = "final"  # final that long, still registered
    SUPERSEDED = "superseded"  # registered again that long ago: earlier registrations' history


_COLUMNS = (
    WORKLOADS.c.id,
    WORKLOADS.c.kind,
    WORKLOADS.c.labels,
    WORKLOADS.c.generation,
    WORKLOADS.c.deleted_at,
    WORKLOADS.c.created_at,
)


async def _retired_page(run: _PruneRun, why: Retired, after: str) -> tuple[list[Any], str | None]:
    """A page of workloads retired for `why` with history left to delete, in id order after
    `after`; and where the next page starts (None: this was the last). Whether rows are left is
    asked per page through the (workload_id, id) indexes, never by a join over whole tables."""
    cut = run.cut.history
    where = {
        Retired.DEREGISTERED: [WORKLOADS.c.deleted_at.is_not(None), WORKLOADS.c.deleted_at < cut],
        Retired.FINAL: [
            WORKLOADS.c.deleted_at.is_(None),
            WORKLOADS.c.state.in_(list(FINAL_STATES)),
            WORKLOADS.c.state_changed_at < cut,
        ],
        Retired.SUPERSEDED: [
            WORKLOADS.c.deleted_at.is_(None),
            WORKLOADS.c.generation > 1,
            WORKLOADS.c.created_at < cut,
        ],
    }[why]
    query = (
        select(*_COLUMNS)
        .where(WORKLOADS.c.id > after, *where)
        .order_by(WORKLOADS.c.id)
        .limit(WORKLOAD_PAGE)
    )
    async with reading(run.engine) as conn:
        page = list(await conn.execute(query))
        if not page:
            return [], None
        ids = [w.id for w in page]
        oldest = {
            r.workload_id: int(r.gen)
            for r in await conn.execute(
                select(TRANSITIONS.c.workload_id, func.min(TRANSITIONS.c.generation).label("gen"))
                .where(TRANSITIONS.c.workload_id.in_(ids))
                .group_by(TRANSITIONS.c.workload_id)
            )
        }
        refused = set()
        if why is Retired.FINAL:
            refused = {
                r.workload_id
                for r in await conn.execute(
                    select(REFUSED_OBSERVATIONS.c.workload_id)
                    .where(REFUSED_OBSERVATIONS.c.workload_id.in_(ids))
                    .distinct()
                )
            }
    following = page[-1].id if len(page) == WORKLOAD_PAGE else None
    if why is Retired.DEREGISTERED:
        return page, following  # their rows go too, history or not
    if why is Retired.FINAL:
        return [w for w in page if w.id in oldest or w.id in refused], following
    return [w for w in page if oldest.get(w.id, w.generation) < w.generation], following


async def _retire_ended(run: _PruneRun, page: Sequence[Any]) -> None:
    """Workloads final or deregistered longer than the history is kept: roll up every
    registration of theirs, then delete their transitions, refusals and (deregistered) rows."""
    if not page:
        return
    rows = {w.id: w for w in page}
    ids = list(rows)
    async with reading(run.engine) as conn:
        seen = {
            (r.workload_id, int(r.generation))
            for r in await conn.execute(
                select(TRANSITIONS.c.workload_id, TRANSITIONS.c.generation)
                .where(TRANSITIONS.c.workload_id.in_(ids))
                .distinct()
            )
        }
        # Refusals recorded after this read (an id registered again meanwhile) are kept. The
        # table-wide max is read off the primary key's end; a max filtered by these ids would
        # walk that index backward over every other workload's rows.
        newest_refused = (
            await conn.execute(select(func.max(REFUSED_OBSERVATIONS.c.id)))
        ).scalar_one()
    # Only registrations up to the one seen now: the id may be registered again meanwhile.
    current = {(w.id, int(w.generation)) for w in page}
    regs = sorted({r for r in seen if r[1] <= int(rows[r[0]].generation)} | current)
    if not run.dry:
        async with transaction(run.engine) as conn:
            run.report.rollup_days += await roll_up(conn, rows, regs, run.cut.now.timestamp())
    await run.delete_batches(
        PrunedTable.TRANSITIONS,
        TRANSITIONS,
        [
            TRANSITIONS.c.workload_id.in_(ids),
            tuple_(TRANSITIONS.c.workload_id, TRANSITIONS.c.generation).in_(regs),
        ],
    )
    if newest_refused is not None:
        await run.delete_batches(
            PrunedTable.REFUSED,
            REFUSED_OBSERVATIONS,
            [
                REFUSED_OBSERVATIONS.c.workload_id.in_(ids),
                REFUSED_OBSERVATIONS.c.id <= newest_refused,
            ],
        )
    gone = [(w.id, int(w.generation)) for w in page if w.deleted_at is not None]
    if gone:
        await _forget_workloads(run, gone)


async def _retire_superseded(run: _PruneRun, w: Any) -> None:
    """An id registered again longer ago than the history is kept: its earlier registrations'
    history goes (rolled up first); the current one's stays."""
    async with reading(run.engine) as conn:
        gens = [
            int(g)
            for (g,) in await conn.execute(
                select(TRANSITIONS.c.generation)
                .where(TRANSITIONS.c.workload_id == w.id, TRANSITIONS.c.generation < w.generation)
                .distinct()
            )
        ]
    regs = [(w.id, g) for g in sorted(gens)]
    if not run.dry:
        async with transaction(run.engine) as conn:
            run.report.rollup_days += await roll_up(conn, {w.id: w}, regs, run.cut.now.timestamp())
    await run.delete_batches(
        PrunedTable.TRANSITIONS,
        TRANSITIONS,
        [TRANSITIONS.c.workload_id == w.id, TRANSITIONS.c.generation < w.generation],
    )
    # An earlier registration's refusals: those recorded before this one began.
    await run.delete_batches(
        PrunedTable.REFUSED,
        REFUSED_OBSERVATIONS,
        [
            REFUSED_OBSERVATIONS.c.workload_id == w.id,
            REFUSED_OBSERVATIONS.c.recorded_at < w.created_at,
        ],
    )


async def _forget_workloads(run: _PruneRun, gone: Sequence[tuple[str, int]]) -> None:
    """Delete deregistered workloads' rows, raising the generation mark in the same
    transaction: registering such an id again must give a generation above any it had."""
    if run.dry:
        run.done(PrunedTable.WORKLOADS, len(gone))
        return
    insert = sqlite.insert if is_sqlite(run.engine.url) else postgresql.insert
    highest = max(gen for _, gen in gone)
    async with transaction(run.engine) as conn:
        # Raised first, whether or not every row is still there to delete: a mark higher than
        # needed costs nothing, one lower than a deleted row's generation would.
        await conn.execute(
            insert(HIGH_WATER_MARKS).values(name=GENERATION_MARK, value=0).on_conflict_do_nothing()
        )
        await conn.execute(
            update(HIGH_WATER_MARKS)
            .where(HIGH_WATER_MARKS.c.name == GENERATION_MARK, HIGH_WATER_MARKS.c.value < highest)
            .values(value=highest)
        )
        result = await conn.execute(
            WORKLOADS.delete().where(
                tuple_(WORKLOADS.c.id, WORKLOADS.c.generation).in_(list(gone)),
                WORKLOADS.c.deleted_at.is_not(None),
                WORKLOADS.c.deleted_at < run.cut.history,
            )
        )
    run.done(PrunedTable.WORKLOADS, int(result.rowcount or 0))


async def prune_history(run: _PruneRun) -> None:
    for why in Retired:
        after: str | None = ""
        while after is not None:
            page, after = await _retired_page(run, why, after)
            if why is Retired.SUPERSEDED:
                for w in page:
                    await _retire_superseded(run, w)
            else:
                await _retire_ended(run, page)


# -- refused observations beyond the newest N per workload -------------------------------------


async def prune_refused(run: _PruneRun) -> None:
    keep = run.cut.refused_per_workload
    async with reading(run.engine) as conn:
        crowded = [
            r.workload_id
            for r in await conn.execute(
                select(REFUSED_OBSERVATIONS.c.workload_id)
                .group_by(REFUSED_OBSERVATIONS.c.workload_id)
                .having(func.count() > keep)
            )
        ]
    for workload_id in crowded:
        async with reading(run.engine) as conn:
            oldest_kept = (
                await conn.execute(
                    select(REFUSED_OBSERVATIONS.c.id)
                    .where(REFUSED_OBSERVATIONS.c.workload_id == workload_id)
                    .order_by(REFUSED_OBSERVATIONS.c.id.desc())
                    .offset(max(keep - 1, 0))
                    .limit(1)
                )
            ).scalar_one_or_none()
        if oldest_kept is None:
            continue
        # keep == 0 keeps none: everything up to and including the newest goes.
        bound = (
            REFUSED_OBSERVATIONS.c.id <= oldest_kept
            if keep == 0
            else REFUSED_OBSERVATIONS.c.id < oldest_kept
        )
        await run.delete_batches(
            PrunedTable.REFUSED,
            REFUSED_OBSERVATIONS,
            [REFUSED_OBSERVATIONS.c.workload_id == workload_id, bound],
        )


# -- outbox and audit: by age --------------------------------------------------------------------


async def prune_outbox(run: _PruneRun) -> None:
    await run.delete_batches(
        PrunedTable.OUTBOX,
        OUTBOX,
        [
            OUTBOX.c.status.in_([OutboxStatus.SYNCED, OutboxStatus.DEAD]),
            OUTBOX.c.created_at < run.cut.outbox,
        ],
    )


async def prune_audit(run: _PruneRun) -> None:
    at = AUDIT_EVENTS.c.at
    await run.delete_batches(PrunedTable.AUDIT, AUDIT_EVENTS, [at < run.cut.audit])


def policies() -> list[Policy]:
    """Every table policy, in the order a run applies them (history first: it writes the
    rollup the others never need)."""
    return [prune_history, prune_refused, prune_outbox, prune_audit]


async def prune(
    engine: AsyncEngine,
    settings: Settings,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> PruneReport:
    """Bring every table within policy. Safe to run concurrently with everything else (and with
    itself: a row deleted twice is deleted once)."""
    started = time.monotonic()
    run = _PruneRun(
        engine,
        RetentionCutoffs.of(settings, now or datetime.now(UTC)),
        PruneReport(dry_run=dry_run),
        progress,
    )
    for policy in policies():
        await policy(run)
    run.report.seconds = time.monotonic() - started
    log.info("retention.pruned", **run.report.as_json())
    return run.report
