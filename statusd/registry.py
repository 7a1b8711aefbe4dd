"""Registering and deregistering workloads (creation and retirement, not state changes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement

from statusd.db import transaction
from statusd.errors import BadInput, UnknownWorkload, WorkloadExists
from statusd.lifecycle import Kind, State
from statusd.models import utcnow
from statusd.tables import HIGH_WATER_MARKS, WORKLOADS

# The high-water mark retention raises when it deletes a deregistered workload's row.
GENERATION_MARK = "generation"


async def generation_mark(conn: AsyncConnection) -> int:
    """The highest generation of any workload row retention deleted (0: none)."""
    value = (
        await conn.execute(
            select(HIGH_WATER_MARKS.c.value).where(HIGH_WATER_MARKS.c.name == GENERATION_MARK)
        )
    ).scalar_one_or_none()
    return int(value or 0)


@dataclass(frozen=True, slots=True)
class Registration:
    """One workload to register (already validated: statusd.schema.bodies.RegisterRequest)."""

    id: str
    kind: Kind
    status_url: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    parent: str | None = None  # registered already (checked here), never the id itself (schema)


Registered = dict[str, Any] | WorkloadExists | BadInput  # the workload's row, or why not


class _SkipTakenIds(ClauseElement):
    """`ON CONFLICT (id) DO NOTHING`, the same text on PostgreSQL and SQLite.

    The dialects' own `insert().on_conflict_do_nothing()` cannot be cached by SQLAlchemy (their
    Insert classes opt out): each registration would compile its INSERT anew, a large share of
    its CPU (docs/benchmarks.md, "Registration"). This clause has no parameters: its cache key
    is constant and the INSERT carrying it is compiled once per process."""

    __visit_name__ = "skip_taken_ids"
    _traverse_internals = []  # no parameters: a constant cache key


@compiles(_SkipTakenIds)
def _compile_skip_taken_ids(_element: _SkipTakenIds, _compiler: Any, **_kw: Any) -> str:
    return "ON CONFLICT (id) DO NOTHING"


def _insert_new() -> Any:
    """INSERT INTO workloads ... ON CONFLICT (id) DO NOTHING RETURNING id, generation (cacheable).

    A new id starts one above the generation high-water mark: an id whose row retention deleted
    may come back, and its old heartbeat tokens name generations up to the mark. The mark is a
    subquery of the INSERT itself, so it costs no round trip."""
    first_generation = (
        select(func.coalesce(func.max(HIGH_WATER_MARKS.c.value), 0) + 1)
        .where(HIGH_WATER_MARKS.c.name == GENERATION_MARK)
        .scalar_subquery()
    )
    statement = (
        insert(WORKLOADS)
        .values(generation=first_generation)
        .returning(WORKLOADS.c.id, WORKLOADS.c.generation)
    )
    statement._post_values_clause = _SkipTakenIds()  # rendered after VALUES by every compiler
    return statement


_INSERT_NEW = _insert_new()


def _fresh(reg: Registration, now: datetime) -> dict[str, Any]:
    return {
        "kind": reg.kind,
        "state": State.PENDING,
        "prior_state": None,
        "version": 0,
        "labels": dict(reg.labels),
        "status_url": reg.status_url,
        "last_seq": None,
        "last_seen_at": None,
        "state_changed_at": now,
        "created_at": now,
        "deleted_at": None,
        "poll_failures": 0,
        "last_poll_error": None,
        "last_poll_at": None,
        "parent": reg.parent,
    }


async def _missing_parents(conn: AsyncConnection, parents: set[str]) -> set[str]:
    """The named parents that are not registered now. A parent must exist before its child, and
    is fixed then: no chain of parents can ever close into a cycle."""
    if not parents:
        return set()
    found = await conn.execute(
        select(WORKLOADS.c.id).where(
            WORKLOADS.c.id.in_(sorted(parents)), WORKLOADS.c.deleted_at.is_(None)
        )
    )
    return parents - set(found.scalars().all())


async def register_many(conn: AsyncConnection, regs: Sequence[Registration]) -> list[Registered]:
    """Create workloads in PENDING; one answer per item, in order.

    A deregistered id comes back with the next generation; a registered one (or an id given
    twice in `regs`: the first wins) is refused with WorkloadExists and writes nothing; one
    naming a parent that is not registered, with BadInput (`unknown_parent`). New ids,
    the common case, cost one statement for the whole list: INSERT ... ON CONFLICT DO NOTHING
    RETURNING id; each id it skipped costs one conditional UPDATE. The rows are built from the
    values written, never read back. Every statement is atomic on its own, so one registration
    needs no transaction around it (`statusd.db.each_statement`); many take one (all or none)."""
    now = utcnow()
    answers: list[Registered | None] = [None] * len(regs)
    first: dict[str, int] = {}
    missing = await _missing_parents(conn, {r.parent for r in regs if r.parent is not None})
    for index, reg in enumerate(regs):
        if reg.parent in missing:
            answers[index] = BadInput(
                f"parent {reg.parent!r} is not registered (register the parent first)",
                field="parent",
                error="unknown_parent",
            )
        elif reg.id in first:
            answers[index] = WorkloadExists(f"workload {reg.id!r} is given twice in this batch")
        else:
            first[reg.id] = index
    rows = {wid: {"id": wid, **_fresh(regs[i], now)} for wid, i in first.items()}
    inserted: set[str] = set()
    if rows:
        result = await conn.execute(_INSERT_NEW, list(rows.values()))
        for row in result:
            rows[row.id]["generation"] = row.generation
            inserted.add(row.id)
    for wid in [wid for wid in rows if wid not in inserted]:
        # Taken: registered (refused below) or deregistered (back with the next generation). One
        # conditional UPDATE decides atomically: a concurrent re-registration of the same id
        # waits on the row lock, then finds it registered (0 rows) and is refused.
        values = {k: v for k, v in rows[wid].items() if k != "id"}
        revived = (
            await conn.execute(
                update(WORKLOADS)
                .where(WORKLOADS.c.id == wid, WORKLOADS.c.deleted_at.is_not(None))
                .values(generation=WORKLOADS.c.generation + 1, **values)
                .returning(WORKLOADS.c.generation)
            )
        ).first()
        if revived is not None:
            rows[wid]["generation"] = revived.generation
            inserted.add(wid)
    for wid, index in first.items():
        if wid in inserted:
            answers[index] = rows[wid]
        else:
            answers[index] = WorkloadExists(f"workload {wid!r} is already registered")
    return [answer for answer in answers if answer is not None]


async def register(
    engine: AsyncEngine,
    workload_id: str,
    kind: Kind,
    *,
    status_url: str | None = None,
    labels: dict[str, str] | None = None,
    parent: str | None = None,
) -> dict[str, Any]:
    """Create a workload in PENDING. A deregistered id comes back with the next generation.
    Raises WorkloadExists, or BadInput for a parent that is not registered."""
    async with transaction(engine) as conn:
        [answer] = await register_many(
            conn, [Registration(workload_id, kind, status_url, labels or {}, parent)]
        )
    if isinstance(answer, WorkloadExists | BadInput):
        raise answer
    return answer


async def deregister(engine: AsyncEngine, workload_id: str) -> dict[str, Any]:
    """Stop tracking a workload; its history stays. Raises UnknownWorkload."""
    async with transaction(engine) as conn:
        result = await conn.execute(
            update(WORKLOADS)
            .where(WORKLOADS.c.id == workload_id, WORKLOADS.c.deleted_at.is_(None))
            .values(deleted_at=utcnow())
        )
        if result.rowcount != 1:
            raise UnknownWorkload(f"workload {workload_id!r} is not registered")
        row = (await conn.execute(select(WORKLOADS).where(WORKLOADS.c.id == workload_id))).one()
    return dict(row._mapping)


async def retire(engine: AsyncEngine, workload_ids: Sequence[str]) -> None:
    """Deregister workloads just registered whose registration could not be completed."""
    async with transaction(engine) as conn:
        await conn.execute(
            update(WORKLOADS)
            .where(WORKLOADS.c.id.in_(workload_ids), WORKLOADS.c.deleted_at.is_(None))
            .values(deleted_at=utcnow())
        )
