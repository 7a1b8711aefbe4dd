"""Maintenance windows: "these workloads will be down then; that is planned".

A window matches workloads with the silences' matcher (statusd.silences.Matcher) and is either
one-off (`starts_at` .. `ends_at`) or recurring: a five-field cron `schedule` read in an IANA
`timezone` (croniter over zoneinfo, so "02:00 every night" stays 02:00 local across DST), each
occurrence lasting `duration_s`. While one is in force a matching workload raises no alert
(statusd.alerting) and is not judged stale by silence; once it ends, silence counts from its end
with a full allowance (`excused_until` feeds statusd.staleness's `Facts.quiet_until`). A window
has no effect before it was created: an occurrence that ended earlier excuses nothing, and
availability reports leave out only occurrences after the creation.

Windows live in the database (a Redis flush cannot end one early). Every reader loads all rows
once (a handful per fleet) and evaluates them in Python at one moment: the sweeper once per
sweep, a transition inside its own database transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from statusd.db import reading, transaction
from statusd.lifecycle import Kind
from statusd.models import utcnow
from statusd.silences import Matcher
from statusd.tables import MAINTENANCES

# Occurrences walked per span when listing a recurring window's occurrences over a report window:
# a one-minute schedule over a month is 44,640; beyond this the report counts what it walked.
MAX_OCCURRENCES = 50_000


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A cron schedule in a time zone, each occurrence lasting `duration_s`."""

    schedule: str
    duration_s: int
    timezone: str

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=self.duration_s)

    def latest_start(self, at: datetime) -> datetime | None:
        """The newest occurrence starting at or before `at` (croniter's get_prev is strict, so it
        starts from just after `at`); None when croniter finds none (a date that never comes,
        such as 30 February: the API refuses those, this keeps any stored one harmless)."""
        try:
            it = croniter(
                self.schedule, at.astimezone(ZoneInfo(self.timezone)) + timedelta(seconds=1)
            )
            start: datetime = it.get_prev(datetime)
            while start > at:
                start = it.get_prev(datetime)
        except (CroniterError, ValueError, KeyError):
            return None
        return start.astimezone(UTC)

    def next_start(self, after: datetime) -> datetime | None:
        """The first occurrence starting strictly after `after` (None: croniter finds none)."""
        try:
            it = croniter(self.schedule, after.astimezone(ZoneInfo(self.timezone)))
            start: datetime = it.get_next(datetime)
        except (CroniterError, ValueError, KeyError):
            return None
        return start.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class MaintenanceRecord:
    id: str
    match: Matcher
    reason: str
    created_at: datetime
    starts_at: datetime | None = None  # one-off
    ends_at: datetime | None = None
    recurrence: Recurrence | None = None  # recurring

    def latest(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The newest occurrence (start, end) starting at or before `at` and ending after the
        window was created; None when there is none."""
        if self.recurrence is not None:
            start = self.recurrence.latest_start(at)
            if start is None:
                return None
            span = (start, start + self.recurrence.duration)
        elif self.starts_at is not None and self.ends_at is not None and self.starts_at <= at:
            span = (self.starts_at, self.ends_at)
        else:
            return None
        return span if span[1] > self.created_at else None

    def excused_until(self, at: datetime) -> float | None:
        """Unix time until which this window excuses silence, seen at `at`: the end of its newest
        occurrence that has started (in the future while one is in force)."""
        span = self.latest(at)
        return span[1].timestamp() if span is not None else None

    def active(self, at: datetime) -> bool:
        span = self.latest(at)
        return span is not None and span[1] > at

    def current_or_next(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The occurrence in force at `at`, else the next one (None: a one-off that is over)."""
        span = self.latest(at)
        if span is not None and span[1] > at:
            return span
        if self.recurrence is not None:
            start = self.recurrence.next_start(at)
            return None if start is None else (start, start + self.recurrence.duration)
        if self.starts_at is not None and self.ends_at is not None and self.starts_at > at:
            return self.starts_at, self.ends_at
        return None

    def spans(self, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
        """Occurrences overlapping [since, until), clipped to it and to the creation time."""
        lower = max(since, self.created_at)
        if lower >= until:
            return []
        if self.recurrence is None:
            if self.starts_at is None or self.ends_at is None:
                return []
            raw = [(self.starts_at, self.ends_at)]
        else:
            duration = self.recurrence.duration
            raw = []
            start = self.recurrence.latest_start(lower) or self.recurrence.next_start(lower)
            while start is not None and start < until and len(raw) < MAX_OCCURRENCES:
                raw.append((start, start + duration))
                start = self.recurrence.next_start(start)
        return [(max(s, lower), min(e, until)) for s, e in raw if e > lower and s < until]

    def as_json(self, now: datetime) -> dict[str, Any]:
        occurrence = self.current_or_next(now)
        rec = self.recurrence
        return {
            "id": self.id,
            "match": self.match.as_json(),
            "start": _iso(self.starts_at),
            "end": _iso(self.ends_at),
            "schedule": rec.schedule if rec else None,
            "duration_s": rec.duration_s if rec else None,
            "timezone": rec.timezone if rec else None,
            "reason": self.reason,
            "created_at": _iso(self.created_at),
            "active": self.active(now),
            "next_start": _iso(occurrence[0]) if occurrence else None,
            "next_end": _iso(occurrence[1]) if occurrence else None,
        }


def _record(row: Any) -> MaintenanceRecord:
    recurrence = (
        Recurrence(row.schedule, int(row.duration_s or 0), row.timezone or "UTC")
        if row.schedule is not None
        else None
    )
    return MaintenanceRecord(
        id=row.id,
        match=Matcher.from_row(row),
        reason=row.reason,
        created_at=row.created_at,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        recurrence=recurrence,
    )


async def create(
    engine: AsyncEngine,
    match: Matcher,
    reason: str,
    *,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    recurrence: Recurrence | None = None,
    created_at: datetime | None = None,
) -> MaintenanceRecord:
    record = MaintenanceRecord(
        str(uuid.uuid4()), match, reason, created_at or utcnow(), starts_at, ends_at, recurrence
    )
    async with transaction(engine) as conn:
        await conn.execute(
            insert(MAINTENANCES).values(
                id=record.id,
                **match.columns(),
                starts_at=starts_at,
                ends_at=ends_at,
                schedule=recurrence.schedule if recurrence else None,
                duration_s=recurrence.duration_s if recurrence else None,
                timezone=recurrence.timezone if recurrence else None,
                reason=reason,
                created_at=record.created_at,
            )
        )
    return record


async def list_all(engine: AsyncEngine) -> list[MaintenanceRecord]:
    """Every window, newest first."""
    query = select(MAINTENANCES).order_by(MAINTENANCES.c.created_at.desc(), MAINTENANCES.c.id)
    async with reading(engine) as conn:
        return [_record(r) for r in await conn.execute(query)]


async def get(engine: AsyncEngine, maintenance_id: str) -> MaintenanceRecord | None:
    async with reading(engine) as conn:
        row = (
            await conn.execute(select(MAINTENANCES).where(MAINTENANCES.c.id == maintenance_id))
        ).first()
    return _record(row) if row is not None else None


async def remove(engine: AsyncEngine, maintenance_id: str) -> bool:
    """Delete a window; False when there was none with that id."""
    async with transaction(engine) as conn:
        result = await conn.execute(delete(MAINTENANCES).where(MAINTENANCES.c.id == maintenance_id))
    return bool(result.rowcount)


async def all_in(conn: AsyncConnection) -> list[MaintenanceRecord]:
    """Every window, read on an open connection (inside a transition's transaction, so the alert
    decision and the windows it saw are one consistent read)."""
    return [_record(r) for r in await conn.execute(select(MAINTENANCES))]


@dataclass(frozen=True, slots=True)
class Excuses:
    """Every window evaluated once at one moment (cron is walked once per window, not once per
    workload): what a sweep, a report or a transition asks per workload is then only matching."""

    at: float  # unix time they were evaluated at
    ends: tuple[tuple[Matcher, float], ...]  # (matcher, end of its newest started occurrence)

    @classmethod
    def of(cls, windows: Iterable[MaintenanceRecord], at: datetime) -> Excuses:
        ends = tuple((w.match, end) for w in windows if (end := w.excused_until(at)) is not None)
        return cls(at.timestamp(), ends)

    def until(self, workload_id: str, kind: Kind | str, labels: Mapping[str, str]) -> float | None:
        """Until when maintenance excuses this workload's silence (statusd.staleness's
        `Facts.quiet_until`): the latest end among its windows' newest occurrences."""
        found = [end for m, end in self.ends if m.matches(workload_id, kind, labels)]
        return max(found, default=None)

    def covers(self, workload_id: str, kind: Kind | str, labels: Mapping[str, str]) -> bool:
        """Whether a window covering this workload is in force."""
        return any(end > self.at and m.matches(workload_id, kind, labels) for m, end in self.ends)
