"""The one writer of outbox rows: every event that must reach a peer (a transition for the main
API, an alert for a webhook, statusd's own disruption alerts) is made into rows here.

An event is identified by its own key (`transition:<id>`, `disruption:<ms>`, `released:<id>`), and a row by
(event key, target, destination): writing the same event twice is an IntegrityError, never a
second delivery. Rows are delivered in the order they were written within their ordering group,
(target, workload id, destination), by statusd.sync.outbox; statusd's own events form the group
of workload id STATUSD_EVENTS, which no workload can have (ids are never empty).

Producers write in their own transaction (a transition's rows commit with the transition), so an
event is in the outbox exactly when what caused it is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from statusd.models import OutboxStatus, OutboxTarget, utcnow
from statusd.tables import OUTBOX

_INSERT = insert(OUTBOX)

STATUSD_EVENTS = ""  # the ordering group of events about statusd itself, not a workload


def transition_key(transition_id: int) -> str:
    return f"transition:{transition_id}"


def disruption_key(at_ms: int) -> str:
    return f"disruption:{at_ms}"


def released_key(transition_id: int) -> str:
    """A child's alert held by its parent and raised later (statusd.dependencies): its own
    event, apart from the transition's, so raising it can never collide with or orphan either."""
    return f"released:{transition_id}"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One event for one target: a row per destination (the main API has the one, "")."""

    key: str
    target: OutboxTarget
    payload: dict[str, Any]
    workload_id: str = STATUSD_EVENTS
    transition_id: int | None = None  # the transition that caused it, if one did
    destinations: Sequence[str] = field(default=("",))


def outbox_rows(events: Sequence[OutboxEvent]) -> list[dict[str, Any]]:
    """The rows of these events, in order: pending, due now, never tried."""
    now = utcnow()
    return [
        {
            "event_key": event.key,
            "transition_id": event.transition_id,
            "workload_id": event.workload_id,
            "target": event.target,
            "destination": destination,
            "payload": event.payload,
            "status": OutboxStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for event in events
        for destination in event.destinations
    ]


async def write_outbox(conn: AsyncConnection, events: Sequence[OutboxEvent]) -> None:
    """Write the events' rows in the caller's transaction (one multi-row INSERT)."""
    rows = outbox_rows(events)
    if rows:
        await conn.execute(_INSERT, rows)
