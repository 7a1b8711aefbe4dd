"""The SQL tables behind the SQLModel models, for Core queries: one name per table, typed.

SQLModel declares `__table__` without a type; taking each one here, once, keeps the Core
queries readable (`WORKLOADS.c.state`) and the type checker informed.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from statusd.models import (
    ApiKey,
    AuditEvent,
    AvailabilityDay,
    HeldAlert,
    HighWaterMark,
    IngestOutage,
    MaintenanceRow,
    OutboxEntry,
    RefusedObservation,
    SilenceRow,
    TransitionRow,
    WorkloadRow,
)


def _table(model: object) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


WORKLOADS = _table(WorkloadRow)
TRANSITIONS = _table(TransitionRow)
REFUSED_OBSERVATIONS = _table(RefusedObservation)
OUTBOX = _table(OutboxEntry)
SILENCES = _table(SilenceRow)
MAINTENANCES = _table(MaintenanceRow)
API_KEYS = _table(ApiKey)
AUDIT_EVENTS = _table(AuditEvent)
AVAILABILITY_DAYS = _table(AvailabilityDay)
INGEST_OUTAGES = _table(IngestOutage)
HIGH_WATER_MARKS = _table(HighWaterMark)
HELD_ALERTS = _table(HeldAlert)
