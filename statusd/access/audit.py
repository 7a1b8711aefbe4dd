"""The audit trail: one row per mutating call or sign-in attempt, written here and nowhere else.

Rows are appended and read; no route updates or deletes them (only retention does).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.access.scopes import Principal
from statusd.db import reading, transaction
from statusd.errors import BadInput
from statusd.tables import AUDIT_EVENTS

_CURSOR_PREFIX = "a1:"
# A refused call's target is whatever the client put in the path: its row must still be written
# (PostgreSQL refuses NUL in text), so control characters are replaced, not stored.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AuditAction(StrEnum):
    """What a mutating route does, as its audit rows name it."""

    WORKLOAD_REGISTER = "workload.register"
    WORKLOAD_BATCH_REGISTER = "workload.batch_register"
    WORKLOAD_TRANSITION = "workload.transition"
    WORKLOAD_DEREGISTER = "workload.deregister"
    SILENCE_CREATE = "silence.create"
    SILENCE_DELETE = "silence.delete"
    MAINTENANCE_CREATE = "maintenance.create"
    MAINTENANCE_DELETE = "maintenance.delete"
    KEY_CREATE = "key.create"
    KEY_REVOKE = "key.revoke"
    PRUNE = "prune"
    LOGIN = "login"
    LOGOUT = "logout"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    at: datetime
    actor_id: str
    actor_name: str
    action: str
    target: str | None
    outcome: int
    client_address: str | None

    @classmethod
    def of(
        cls,
        principal: Principal,
        action: str,
        *,
        at: datetime,
        target: str | None,
        outcome: int,
        client_address: str | None,
    ) -> AuditRecord:
        return cls(
            at=at,
            actor_id=principal.key_id,
            actor_name=principal.name,
            action=action,
            target=_CONTROL.sub("\ufffd", target[:300]) if target else None,
            outcome=outcome,
            client_address=client_address[:64] if client_address else None,
        )


async def record(engine: AsyncEngine, entry: AuditRecord) -> None:
    """Append one row (the one writer of audit_events)."""
    async with transaction(engine) as conn:
        await conn.execute(
            insert(AUDIT_EVENTS).values(
                at=entry.at,
                actor_id=entry.actor_id,
                actor_name=entry.actor_name,
                action=entry.action,
                target=entry.target,
                outcome=entry.outcome,
                client_address=entry.client_address,
            )
        )


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> int:
    """The row id a cursor names; BadInput (400, field cursor) when this API did not issue it."""
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        text = ""
    digits = text[len(_CURSOR_PREFIX) :]
    if not text.startswith(_CURSOR_PREFIX) or not digits.isdigit() or len(digits) > 19:
        raise BadInput("cursor is not one this API issued", field="cursor", status=400)
    return int(digits)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None  # key id or name
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    after_id: int = 0


def _json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "at": row["at"].isoformat(),
        "actor_id": row["actor_id"],
        "actor_name": row["actor_name"],
        "action": row["action"],
        "target": row["target"],
        "outcome": row["outcome"],
        "client_address": row["client_address"],
    }


async def page(
    engine: AsyncEngine, flt: AuditFilter, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Rows matching `flt`, oldest first (keyset on id), and the next page's cursor (or None)."""
    query = select(AUDIT_EVENTS).where(AUDIT_EVENTS.c.id > flt.after_id)
    if flt.actor is not None:
        query = query.where(
            or_(AUDIT_EVENTS.c.actor_id == flt.actor, AUDIT_EVENTS.c.actor_name == flt.actor)
        )
    if flt.action is not None:
        query = query.where(AUDIT_EVENTS.c.action == flt.action)
    if flt.target is not None:
        query = query.where(AUDIT_EVENTS.c.target == flt.target)
    if flt.since is not None:
        query = query.where(AUDIT_EVENTS.c.at >= flt.since)
    async with reading(engine) as conn:
        rows = [
            _json(dict(r._mapping))
            for r in await conn.execute(query.order_by(AUDIT_EVENTS.c.id).limit(limit + 1))
        ]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]["id"]) if more and rows else None
