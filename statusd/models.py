"""SQLModel tables. The schema itself is created only by Alembic migrations (migrations/)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import Enum as SAEnum
from sqlmodel import Field, SQLModel
from sqlmodel._compat import SQLModelConfig

from statusd.access.scopes import Scope
from statusd.lifecycle import Kind, Source, State

# BIGINT on PostgreSQL; INTEGER on SQLite, where only "INTEGER PRIMARY KEY" auto-increments.
BIGID = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(enum: type[StrEnum], name: str) -> Any:
    # Stored as plain strings (native_enum=False): adding a state later needs no ALTER TYPE.
    return SAEnum(
        enum,
        name=name,
        native_enum=False,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way in and out, on SQLite too (which stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: statusd stores UTC-aware timestamps only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class _Table(SQLModel):
    """Base of the table models. statusd reads and writes them through their SQL tables
    (statusd.tables) and never validates a row with pydantic, so pydantic's validator for each
    is built only if something asks for it: building all of them cost every process ~60 ms
    of CPU at import."""

    model_config = SQLModelConfig(defer_build=True)  # merged with SQLModel's own


class WorkloadRow(_Table, table=True):
    __tablename__ = "workloads"
    __table_args__ = (
        Index("ix_workloads_kind_state", "kind", "state"),
        # Retention finds workloads final for longer than the history is kept.
        Index("ix_workloads_state_changed", "state", "state_changed_at"),
        # A parent's recovery finds its children.
        Index("ix_workloads_parent", "parent"),
    )

    id: str = Field(sa_column=Column(String(200), primary_key=True))
    kind: Kind = Field(sa_column=Column(_enum(Kind, "kind"), nullable=False))
    state: State = Field(sa_column=Column(_enum(State, "state"), nullable=False))
    # The state before UNREACHABLE/LOST: recovery is judged from it, so it never goes backward.
    prior_state: State | None = Field(
        default=None, sa_column=Column(_enum(State, "state"), nullable=True)
    )
    # Bumped on every re-registration of the id: heartbeat tokens are bound to it.
    generation: int = Field(default=1, nullable=False)
    # Bumped on every applied transition; the conditional UPDATE checks it (0 rows = someone won).
    version: int = Field(default=0, nullable=False)
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Persisted sign of life at the last state change or poll; the live value is in Redis.
    last_seen_at: datetime | None = Field(default=None, sa_column=_ts())
    state_changed_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    deleted_at: datetime | None = Field(default=None, sa_column=_ts(index=True))
    # Pull-fallback bookkeeping (written by the sweeper; not state).
    poll_failures: int = Field(default=0, nullable=False)
    last_poll_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_poll_at: datetime | None = Field(default=None, sa_column=_ts())
    # The workload this one depends on (statusd.dependencies), fixed at registration; by id, so it
    # outlives the parent's deregistration and follows a re-registration of that id.
    parent: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))


class TransitionRow(_Table, table=True):
    """One applied state change. Never updated; deleted only by retention (statusd.retention),
    after the workload's daily availability rollup was written."""

    __tablename__ = "transitions"
    __table_args__ = (
        Index("ix_transitions_workload_id_id", "workload_id", "id"),
        # The fleet picture and availability reports read a window of recent history.
        Index("ix_transitions_recorded_at", "recorded_at"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BIGID, primary_key=True, autoincrement=True)
    )
    workload_id: str = Field(sa_column=Column(String(200), nullable=False))
    generation: int = Field(default=1, nullable=False)
    kind: Kind = Field(sa_column=Column(_enum(Kind, "kind"), nullable=False))
    from_state: State = Field(sa_column=Column(_enum(State, "state"), nullable=False))
    to_state: State = Field(sa_column=Column(_enum(State, "state"), nullable=False))
    source: Source = Field(sa_column=Column(_enum(Source, "source"), nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    actor: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    observed_at: datetime = Field(sa_column=_ts(nullable=False))
    recorded_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class RefusedObservation(_Table, table=True):
    """An observation the lifecycle refused: who said what, and which rule said no."""

    __tablename__ = "refused_observations"
    __table_args__ = (Index("ix_refused_workload_id_id", "workload_id", "id"),)

    id: int | None = Field(
        default=None, sa_column=Column(BIGID, primary_key=True, autoincrement=True)
    )
    workload_id: str = Field(sa_column=Column(String(200), nullable=False))
    current_state: State = Field(sa_column=Column(_enum(State, "state"), nullable=False))
    requested_state: str = Field(sa_column=Column(String(32), nullable=False))
    source: Source = Field(sa_column=Column(_enum(Source, "source"), nullable=False))
    actor: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    rule: str = Field(sa_column=Column(Text, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    workload_version: int = Field(default=0, nullable=False)
    observed_at: datetime = Field(sa_column=_ts(nullable=False))
    recorded_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class OutboxTarget(StrEnum):
    MAIN = "main"  # the platform's main DB API (PUT /workloads/{id}/status)
    ALERT = "alert"  # an on-call webhook (one row per URL)


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SYNCED = "synced"
    DEAD = (
        "dead"  # permanent failure: kept with the response, replayable by `statusd sync retry-dead`
    )


class OutboxEntry(_Table, table=True):
    """Transactional outbox: written (statusd.outbox_writer) in the same DB transaction as the
    event it carries; delivered in `id` order within (target, workload_id, destination)."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("event_key", "target", "destination", name="uq_outbox_event_target"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_workload_order", "target", "workload_id", "id"),
        # Retention deletes delivered rows and dead letters by age.
        Index("ix_outbox_status_created", "status", "created_at"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BIGID, primary_key=True, autoincrement=True)
    )
    event_key: str = Field(sa_column=Column(String(200), nullable=False))
    transition_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # The ordering group: the workload the event is about ("" for statusd's own events).
    workload_id: str = Field(sa_column=Column(String(200), nullable=False))
    target: OutboxTarget = Field(
        sa_column=Column(_enum(OutboxTarget, "outbox_target"), nullable=False)
    )
    destination: str = Field(
        default="", sa_column=Column(Text, nullable=False)
    )  # webhook URL for ALERT
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: OutboxStatus = Field(
        default=OutboxStatus.PENDING,
        sa_column=Column(_enum(OutboxStatus, "outbox_status"), nullable=False),
    )
    attempts: int = Field(default=0, nullable=False)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    response_status: int | None = Field(default=None, nullable=True)
    response_body: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    lease_owner: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    lease_until: datetime | None = Field(default=None, sa_column=_ts())
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    synced_at: datetime | None = Field(default=None, sa_column=_ts())


class SilenceRow(_Table, table=True):
    """An operator's "don't page me about these until then" (POST /v1/silences).

    Kept in the database, not Redis: a Redis flush must not wake on-call up for workloads someone
    deliberately silenced. Every set matcher must match (AND); at least one is set (the API checks).
    Expired rows are kept (they are history, and tiny); DELETE removes a row for good.
    """

    __tablename__ = "silences"

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    match_kind: Kind | None = Field(
        default=None, sa_column=Column(_enum(Kind, "kind"), nullable=True)
    )
    match_label_key: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    match_label_value: str | None = Field(
        default=None, sa_column=Column(String(500), nullable=True)
    )
    match_id: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    until: datetime = Field(sa_column=_ts(nullable=False, index=True))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class MaintenanceRow(_Table, table=True):
    """A planned maintenance window (POST /v1/maintenances): matching workloads raise no alert and
    are not judged stale by silence while it is in force; afterwards silence counts from its end.

    One-off (`starts_at`/`ends_at`) or recurring (`schedule`, a five-field cron expression read in
    the IANA `timezone`, each occurrence lasting `duration_s`). The matcher is the silences' (every
    set field must match; at least one is set). Kept in the database so a Redis flush cannot end
    a window early; DELETE removes a row for good.
    """

    __tablename__ = "maintenances"

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    match_kind: Kind | None = Field(
        default=None, sa_column=Column(_enum(Kind, "kind"), nullable=True)
    )
    match_label_key: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    match_label_value: str | None = Field(
        default=None, sa_column=Column(String(500), nullable=True)
    )
    match_id: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    starts_at: datetime | None = Field(default=None, sa_column=_ts())
    ends_at: datetime | None = Field(default=None, sa_column=_ts())
    schedule: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    duration_s: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    timezone: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class ApiKey(_Table, table=True):
    """A scoped API key. Only the SHA-256 digest of the secret is kept; the key is shown once.

    Revoked and expired keys stay (the audit trail names them); they just stop authenticating.
    """

    __tablename__ = "api_keys"

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    scope: Scope = Field(sa_column=Column(_enum(Scope, "scope"), nullable=False))
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    digest: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=_ts())
    revoked_at: datetime | None = Field(default=None, sa_column=_ts())


class AuditEvent(_Table, table=True):
    """One mutating API call (or sign-in attempt), refused ones too. Only retention deletes rows."""

    __tablename__ = "audit_events"

    id: int | None = Field(
        default=None, sa_column=Column(BIGID, primary_key=True, autoincrement=True)
    )
    at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False, index=True))
    actor_id: str = Field(sa_column=Column(String(64), nullable=False))
    actor_name: str = Field(sa_column=Column(String(200), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    target: str | None = Field(default=None, sa_column=Column(String(300), nullable=True))
    outcome: int = Field(nullable=False)  # the HTTP status answered
    client_address: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))


class AvailabilityDay(_Table, table=True):
    """One workload generation's seconds per state on one UTC day, written by retention just
    before that generation's transitions are deleted, so availability reports over pruned
    periods give the figures the history gave (statusd.availability)."""

    __tablename__ = "availability_days"
    __table_args__ = (
        UniqueConstraint("workload_id", "generation", "day", name="uq_availability_day"),
        Index("ix_availability_days_day", "day"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BIGID, primary_key=True, autoincrement=True)
    )
    workload_id: str = Field(sa_column=Column(String(200), nullable=False))
    generation: int = Field(nullable=False)
    day: date = Field(sa_column=Column(Date, nullable=False))
    kind: Kind = Field(sa_column=Column(_enum(Kind, "kind"), nullable=False))
    # Kept with each day: the workload row itself may be pruned, and reports filter by labels.
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # {state: seconds} counted that day (time statusd could not hear left out).
    seconds: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    unheard_s: float = Field(default=0.0, nullable=False)
    maintenance_s: float = Field(default=0.0, nullable=False)


class IngestOutage(_Table, table=True):
    """A span during which no ingest process was listening (statusd.hearing records the gaps in
    Redis; statusd.availability keeps them here, where a Redis flush cannot lose them)."""

    __tablename__ = "ingest_outages"

    started_at: datetime = Field(sa_column=Column(UTCDateTime(), primary_key=True))
    ended_at: datetime = Field(sa_column=_ts(nullable=False))


class HighWaterMark(_Table, table=True):
    """Named numbers that only grow. `generation`: the highest generation of any workload row
    retention deleted, so an id registered again after its row was pruned still gets a higher
    generation than any it had (old heartbeat tokens name old generations)."""

    __tablename__ = "high_water_marks"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    value: int = Field(sa_column=Column(BigInteger, nullable=False))


class HeldAlert(_Table, table=True):
    """A child's unreachable/lost alert held while its parent is down (statusd.dependencies):
    one row per child, naming its newest held transition; deleted when the alert is raised after
    all (the parent recovered or proved alive) or has nothing left to say (the child recovered)."""

    __tablename__ = "held_alerts"
    __table_args__ = (Index("ix_held_alerts_parent", "parent"),)

    workload_id: str = Field(sa_column=Column(String(200), primary_key=True))
    generation: int = Field(nullable=False)
    parent: str = Field(sa_column=Column(String(200), nullable=False))
    transition_id: int = Field(sa_column=Column(BIGID, nullable=False))
    held_at: datetime = Field(sa_column=_ts(nullable=False))
