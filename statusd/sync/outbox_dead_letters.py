"""Dead letters: outbox rows a peer refused for good (4xx), kept with the response until replayed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.db import reading, transaction
from statusd.models import OutboxStatus, utcnow
from statusd.tables import OUTBOX


async def list_dead(engine: AsyncEngine, limit: int = 50) -> list[dict[str, Any]]:
    """The newest dead letters, with what the peer answered."""
    async with reading(engine) as conn:
        rows = await conn.execute(
            select(
                OUTBOX.c.id,
                OUTBOX.c.workload_id,
                OUTBOX.c.transition_id,
                OUTBOX.c.target,
                OUTBOX.c.destination,
                OUTBOX.c.attempts,
                OUTBOX.c.response_status,
                OUTBOX.c.response_body,
                OUTBOX.c.last_error,
                OUTBOX.c.created_at,
            )
            .where(OUTBOX.c.status == OutboxStatus.DEAD)
            .order_by(OUTBOX.c.id.desc())
            .limit(limit)
        )
        return [
            {**row._mapping, "target": str(row.target), "created_at": row.created_at.isoformat()}
            for row in rows
        ]


async def retry_dead(
    engine: AsyncEngine, *, ids: Sequence[int] | None = None, workload_id: str | None = None
) -> int:
    """Put dead letters back to pending (after the cause is fixed); returns how many.

    Replayed rows keep their transition order: the drain sends a workload's oldest pending row
    first, and the main API answers 409 for one older than what it already holds (= synced)."""
    query = update(OUTBOX).where(OUTBOX.c.status == OutboxStatus.DEAD)
    if ids:
        query = query.where(OUTBOX.c.id.in_(list(ids)))
    if workload_id is not None:
        query = query.where(OUTBOX.c.workload_id == workload_id)
    async with transaction(engine) as conn:
        result = await conn.execute(
            query.values(
                status=OutboxStatus.PENDING,
                attempts=0,
                next_attempt_at=utcnow(),
                lease_owner=None,
                lease_until=None,
            )
        )
    return int(result.rowcount)
