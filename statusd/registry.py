"""Registering and deregistering workloads (creation and retirement, not state changes)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from statusd.db import is_sqlite, transaction
from statusd.errors import UnknownWorkload, WorkloadExists
from statusd.lifecycle import Kind, State
from statusd.models import HighWaterMark, Workload, utcnow

_W = Workload.__table__  # type: ignore[attr-defined]
_M = HighWaterMark.__table__  # type: ignore[attr-defined]
# The high-water mark retention raises when it deletes a deregistered workload's row.
GENERATION_MARK = "generation"


async def generation_mark(conn: AsyncConnection) -> int:
    """The highest generation of any workload row retention deleted (0: none)."""
    value = (
        await conn.execute(select(_M.c.value).where(_M.c.name == GENERATION_MARK))
    ).scalar_one_or_none()
    return int(value or 0)


async def register(
    engine: AsyncEngine,
    workload_id: str,
    kind: Kind,
    *,
    status_url: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Create a workload in PENDING. A deregistered id comes back with the next generation."""
    now = utcnow()
    fresh: dict[str, Any] = {
        "kind": kind,
        "state": State.PENDING,
        "prior_state": None,
        "version": 0,
        "labels": labels or {},
        "status_url": status_url,
        "last_seq": None,
        "last_seen_at": None,
        "state_changed_at": now,
        "created_at": now,
        "deleted_at": None,
        "poll_failures": 0,
        "last_poll_error": None,
        "last_poll_at": None,
    }
    try:
        async with transaction(engine) as conn:
            query = select(_W.c.generation, _W.c.deleted_at).where(_W.c.id == workload_id)
            if not is_sqlite(engine.url):
                query = query.with_for_update()
            old = (await conn.execute(query)).first()
            if old is None:
                # An id whose row retention deleted may come back: its old heartbeat tokens
                # name generations up to the mark, so it starts above every one of them.
                first = await generation_mark(conn) + 1
                await conn.execute(insert(_W).values(id=workload_id, generation=first, **fresh))
            elif old.deleted_at is None:
                raise WorkloadExists(f"workload {workload_id!r} is already registered")
            else:
                await conn.execute(
                    update(_W)
                    .where(_W.c.id == workload_id)
                    .values(generation=old.generation + 1, **fresh)
                )
            row = (await conn.execute(select(_W).where(_W.c.id == workload_id))).one()
    except IntegrityError as exc:  # two registrations raced on the primary key
        raise WorkloadExists(f"workload {workload_id!r} is already registered") from exc
    return dict(row._mapping)


async def deregister(engine: AsyncEngine, workload_id: str) -> dict[str, Any]:
    """Stop tracking a workload; its history stays. Raises UnknownWorkload."""
    async with transaction(engine) as conn:
        result = await conn.execute(
            update(_W)
            .where(_W.c.id == workload_id, _W.c.deleted_at.is_(None))
            .values(deleted_at=utcnow())
        )
        if result.rowcount != 1:
            raise UnknownWorkload(f"workload {workload_id!r} is not registered")
        row = (await conn.execute(select(_W).where(_W.c.id == workload_id))).one()
    return dict(row._mapping)
