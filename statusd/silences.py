"""Silences: an operator's "these workloads may misbehave until then; don't page anyone".

A silence matches workloads by any combination of kind, one label (`key:value`) and id (all that
are set must match). Matching workloads stay tracked and shown (`"silenced": true`); only their
alerts are held back, decided in the one place alerts are decided (statusd.alerting, called by
statusd.transitions inside the transition's own database transaction). Silences live in the
database, so a Redis flush cannot turn them off.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from statusd.db import reading, transaction
from statusd.lifecycle import Kind
from statusd.models import utcnow
from statusd.tables import SILENCES


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Matcher:
    """Which workloads a silence covers; every field that is set must match."""

    kind: Kind | None = None
    label: tuple[str, str] | None = None  # (key, value)
    workload_id: str | None = None

    def matches(self, workload_id: str, kind: Kind | str, labels: Mapping[str, str]) -> bool:
        if self.workload_id is not None and workload_id != self.workload_id:
            return False
        if self.kind is not None and str(kind) != self.kind.value:
            return False
        if self.label is not None and labels.get(self.label[0]) != self.label[1]:
            return False
        return True

    @classmethod
    def from_row(cls, row: Any) -> Matcher:
        """The matcher stored in a row's `match_*` columns (silences and maintenances alike)."""
        return cls(
            kind=Kind(row.match_kind) if row.match_kind is not None else None,
            label=(
                (row.match_label_key, row.match_label_value or "")
                if row.match_label_key is not None
                else None
            ),
            workload_id=row.match_id,
        )

    def columns(self) -> dict[str, Any]:
        """The `match_*` column values that store this matcher (`from_row` reads them back)."""
        return {
            "match_kind": self.kind,
            "match_label_key": self.label[0] if self.label else None,
            "match_label_value": self.label[1] if self.label else None,
            "match_id": self.workload_id,
        }

    def as_json(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.kind is not None:
            out["kind"] = self.kind.value
        if self.label is not None:
            out["label"] = f"{self.label[0]}:{self.label[1]}"
        if self.workload_id is not None:
            out["id"] = self.workload_id
        return out


@dataclass(frozen=True, slots=True)
class SilenceRecord:
    id: str
    match: Matcher
    until: datetime
    reason: str
    created_at: datetime

    def active(self, now: datetime) -> bool:
        return self.until > now

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "match": self.match.as_json(),
            "until": _iso(self.until),
            "reason": self.reason,
            "created_at": _iso(self.created_at),
            "active": self.active(now),
        }


def _record(row: Any) -> SilenceRecord:
    return SilenceRecord(
        id=row.id,
        match=Matcher.from_row(row),
        until=row.until,
        reason=row.reason,
        created_at=row.created_at,
    )


async def create(
    engine: AsyncEngine, match: Matcher, until: datetime, reason: str
) -> SilenceRecord:
    record = SilenceRecord(str(uuid.uuid4()), match, until, reason, utcnow())
    async with transaction(engine) as conn:
        await conn.execute(
            insert(SILENCES).values(
                id=record.id,
                **match.columns(),
                until=until,
                reason=reason,
                created_at=record.created_at,
            )
        )
    return record


async def list_all(engine: AsyncEngine, *, active_only: bool = False) -> list[SilenceRecord]:
    """Silences, the ones ending last first; expired ones too unless `active_only`."""
    query = select(SILENCES).order_by(SILENCES.c.until.desc(), SILENCES.c.id)
    if active_only:
        query = query.where(SILENCES.c.until > utcnow())
    async with reading(engine) as conn:
        return [_record(r) for r in await conn.execute(query)]


async def remove(engine: AsyncEngine, silence_id: str) -> bool:
    """Delete a silence; False when there was none with that id."""
    async with transaction(engine) as conn:
        result = await conn.execute(delete(SILENCES).where(SILENCES.c.id == silence_id))
    return bool(result.rowcount)


async def active_in(conn: AsyncConnection, now: datetime) -> list[SilenceRecord]:
    """The silences in force at `now`, read on an open connection (inside a transition's
    transaction, so the alert decision and the silences it saw are one consistent read)."""
    return [_record(r) for r in await conn.execute(select(SILENCES).where(SILENCES.c.until > now))]


def silenced(
    silences: Iterable[SilenceRecord],
    workload_id: str,
    kind: Kind | str,
    labels: Mapping[str, str],
) -> bool:
    return any(s.match.matches(workload_id, kind, labels) for s in silences)


def silenced_ids(silences: Sequence[SilenceRecord], rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Ids of the rows (id, kind, labels) some silence covers."""
    if not silences:
        return set()
    return {
        r["id"] for r in rows if silenced(silences, r["id"], r["kind"], dict(r["labels"] or {}))
    }
