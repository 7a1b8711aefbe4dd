"""How far behind the outbox is: depth, oldest unsynced age, dead letters, per-workload `synced`.

Read by the `statusd sync status` CLI, the summary report and, at scrape time, the fleet
collector behind /metrics (statusd.oncall.fleet_collector).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from statusd.db import reading
from statusd.models import OutboxStatus, OutboxTarget, utcnow
from statusd.settings import Settings
from statusd.tables import OUTBOX


def _unsynced_query(workload_ids: Sequence[str] | None) -> Select[Any]:
    """Distinct ids (among `workload_ids`, or all) whose newest transition the main DB does not
    hold yet: a main sync row still pending, or the newest one dead-lettered."""
    newest = select(OUTBOX.c.workload_id, func.max(OUTBOX.c.transition_id).label("newest")).where(
        OUTBOX.c.target == OutboxTarget.MAIN
    )
    if workload_ids is not None:
        newest = newest.where(OUTBOX.c.workload_id.in_(list(workload_ids)))
    latest = newest.group_by(OUTBOX.c.workload_id).subquery()
    return (
        select(OUTBOX.c.workload_id)
        .join(latest, latest.c.workload_id == OUTBOX.c.workload_id)
        .where(
            OUTBOX.c.target == OutboxTarget.MAIN,
            or_(
                OUTBOX.c.status == OutboxStatus.PENDING,
                and_(
                    OUTBOX.c.status == OutboxStatus.DEAD, OUTBOX.c.transition_id == latest.c.newest
                ),
            ),
        )
        .distinct()
    )


async def unsynced_workloads(conn: AsyncConnection, workload_ids: Sequence[str]) -> set[str]:
    """The ids among `workload_ids` whose newest transition the main DB does not hold yet: a main
    sync row still pending, or the newest one dead-lettered. One query for a whole API page."""
    if not workload_ids:
        return set()
    return {str(row[0]) for row in await conn.execute(_unsynced_query(workload_ids))}


async def workload_synced(conn_or_engine: AsyncConnection | AsyncEngine, workload_id: str) -> bool:
    """True when the main DB holds this workload's newest transition (see unsynced_workloads).
    A workload with no transitions is synced."""
    if isinstance(conn_or_engine, AsyncConnection):
        return workload_id not in await unsynced_workloads(conn_or_engine, [workload_id])
    async with reading(conn_or_engine) as conn:
        return workload_id not in await unsynced_workloads(conn, [workload_id])


async def outbox_stats(engine: AsyncEngine, settings: Settings | None = None) -> dict[str, Any]:
    """Outbox depth (pending), oldest unsynced age and dead letters, per target and in total.

    With `settings`, `sync` says whether main-DB sync is "enabled" or "disabled" (no URL: rows
    are kept pending, never discarded)."""
    now = utcnow()
    async with reading(engine) as conn:
        rows = (
            await conn.execute(
                select(
                    OUTBOX.c.target, OUTBOX.c.status, func.count(), func.min(OUTBOX.c.created_at)
                )
                .where(OUTBOX.c.status.in_([OutboxStatus.PENDING, OutboxStatus.DEAD]))
                .group_by(OUTBOX.c.target, OUTBOX.c.status)
            )
        ).all()
        # The same rule as unsynced_workloads (pending, or the newest main row dead), counted.
        unsynced_count = (
            await conn.execute(select(func.count()).select_from(_unsynced_query(None).subquery()))
        ).scalar_one()
    targets: dict[str, dict[str, Any]] = {
        t.value: {"pending": 0, "dead": 0, "oldest_age_s": None} for t in OutboxTarget
    }
    for target, status, count, oldest in rows:
        entry = targets[OutboxTarget(target).value]
        entry[OutboxStatus(status).value] = int(count)
        if OutboxStatus(status) is OutboxStatus.PENDING and oldest is not None:
            entry["oldest_age_s"] = round(max(0.0, (now - oldest).total_seconds()), 3)
    ages = [e["oldest_age_s"] for e in targets.values() if e["oldest_age_s"] is not None]
    stats: dict[str, Any] = {
        "depth": sum(e["pending"] for e in targets.values()),
        "oldest_unsynced_age_s": max(ages) if ages else None,
        "dead_letters": sum(e["dead"] for e in targets.values()),
        "workloads_unsynced": int(unsynced_count),
        "targets": targets,
    }
    if settings is not None:
        stats["sync"] = "enabled" if settings.main_api_url else "disabled"
    return stats
