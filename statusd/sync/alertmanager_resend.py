"""Re-send firing alerts to each Alertmanager while their incident lasts, as Prometheus does.

Alertmanager keeps alerts in memory and resolves an alert whose endsAt passed; statusd posts a
firing alert with endsAt four re-send intervals ahead (statusd.sync.alert_formats) and posts it
again every STATUSD_ALERTMANAGER_RESEND_S. So an Alertmanager that restarted learns the alert
back within one interval, and one that statusd can no longer reach resolves it by itself.

When an incident lasts, for one Alertmanager destination: the newest alert row of that
destination for the workload is a firing one (`unreachable`, `lost`) that was delivered, and the
workload is still UNREACHABLE or LOST (registered). For statusd's own alerts: the newest row is
`disruption` and the disruption mode (statusd.selfwatch) is still on. A silenced workload (or any
whose alert was held back) has no firing row, so nothing is re-sent for it; a recovery writes
a `recovered` row, which ends the re-sends. A newest row still pending (the Alertmanager is down)
is itself the re-send: nothing piles up behind it.

Each re-send is an ordinary alert row (statusd.outbox_writer) with its own event key,
`resend:<id of the row it repeats>`: two runs repeating the same row collide on the outbox's
unique key instead of sending twice. A delivered re-send is deleted when the next one is written
(it says nothing the next does not), so an incident that lasts for weeks keeps its first alert
row and one re-send per Alertmanager, not one row a minute until retention. The row is written in the workload's ordering group, so it is
delivered after the alert it repeats and before any later recovery; and the state is read under
the workload's row lock (PostgreSQL: FOR UPDATE SKIP LOCKED, a workload in mid-transition is
left for the next run; SQLite: the write lock), so no re-send is written after a recovery.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.alert_routes import alertmanager_destination
from statusd.alerting import AlertEvent
from statusd.db import is_sqlite, transaction
from statusd.keys import Keys
from statusd.lifecycle import CONTACT_STATES
from statusd.models import OutboxStatus, OutboxTarget, utcnow
from statusd.outbox_writer import STATUSD_EVENTS, OutboxEvent, write_outbox
from statusd.selfwatch import read_disruption
from statusd.settings import Settings
from statusd.tables import OUTBOX, WORKLOADS

log = structlog.get_logger("statusd.sync")

WORKLOAD_FIRING = frozenset({AlertEvent.UNREACHABLE.value, AlertEvent.LOST.value})


RESEND_PREFIX = "resend:"


def resend_key(row_id: int) -> str:
    return f"{RESEND_PREFIX}{row_id}"


async def resend_firing(engine: AsyncEngine, redis: Redis, keys: Keys, settings: Settings) -> int:
    """Write the re-send rows that are due; returns how many."""
    if not settings.alertmanager_urls:
        return 0
    destinations = [alertmanager_destination(url) for url in settings.alertmanager_urls]
    disruption = (await read_disruption(redis, keys)).active
    try:
        async with transaction(engine) as conn:
            down = select(WORKLOADS.c.id).where(
                WORKLOADS.c.state.in_(list(CONTACT_STATES)), WORKLOADS.c.deleted_at.is_(None)
            )
            if not is_sqlite(engine.url):
                down = down.order_by(WORKLOADS.c.id).with_for_update(skip_locked=True)
            lasting = set((await conn.execute(down)).scalars())
            groups = [*lasting, STATUSD_EVENTS] if disruption else list(lasting)
            if not groups:
                return 0
            newest = (
                select(func.max(OUTBOX.c.id))
                .where(
                    OUTBOX.c.target == OutboxTarget.ALERT,
                    OUTBOX.c.workload_id.in_(groups),
                    OUTBOX.c.destination.in_(destinations),
                )
                .group_by(OUTBOX.c.workload_id, OUTBOX.c.destination)
            )
            rows = await conn.execute(
                select(
                    OUTBOX.c.id,
                    OUTBOX.c.event_key,
                    OUTBOX.c.workload_id,
                    OUTBOX.c.destination,
                    OUTBOX.c.payload,
                    OUTBOX.c.status,
                    OUTBOX.c.synced_at,
                ).where(OUTBOX.c.id.in_(newest))
            )
            due_before = utcnow() - timedelta(seconds=settings.alertmanager_resend_s)
            due = [
                r
                for r in rows
                if OutboxStatus(r.status) is OutboxStatus.SYNCED
                and r.synced_at is not None
                and _as_aware(r.synced_at) <= due_before
                and _firing(r.workload_id, dict(r.payload or {}))
            ]
            events = [
                _resend(r.id, r.workload_id, r.destination, dict(r.payload or {})) for r in due
            ]
            await write_outbox(conn, events)
            superseded = [r.id for r in due if str(r.event_key).startswith(RESEND_PREFIX)]
            if superseded:
                await conn.execute(
                    delete(OUTBOX).where(
                        OUTBOX.c.id.in_(superseded), OUTBOX.c.status == OutboxStatus.SYNCED
                    )
                )
    except IntegrityError:
        log.info("alertmanager.resend_raced")  # another run wrote these re-sends first
        return 0
    if events:
        log.info("alertmanager.resent", rows=len(events))
    return len(events)


def _firing(workload_id: str, payload: dict[str, Any]) -> bool:
    event = payload.get("event")
    if workload_id == STATUSD_EVENTS:
        return event == AlertEvent.DISRUPTION.value
    return event in WORKLOAD_FIRING


def _resend(
    row_id: int, workload_id: str, destination: str, payload: dict[str, Any]
) -> OutboxEvent:
    return OutboxEvent(
        key=resend_key(row_id),
        target=OutboxTarget.ALERT,
        workload_id=workload_id,
        payload={**payload, "resend": True},
        destinations=(destination,),
    )


def _as_aware(value: datetime) -> datetime:
    """SQLite hands timestamps back naive (they are stored in UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
