"""What statusd answers, as typed values: one frozen dataclass per JSON shape, built by `from_json`.

Times are timezone-aware `datetime`s; states and kinds stay strings (the lifecycle table is the
server's: `statusd lifecycle` prints it), so a state added on the server never breaks a client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from statusd_client.api.errors import StatusdApiError, from_answer

JSON = Mapping[str, Any]


def parse_time(value: str) -> datetime:
    """An ISO 8601 time as statusd writes it (offset always given; `Z` accepted)."""
    if value.endswith("Z"):  # datetime.fromisoformat takes `Z` only from Python 3.11
        value = value[:-1] + "+00:00"
    return datetime.fromisoformat(value)


def _time_or_none(value: Any) -> datetime | None:
    return None if value is None else parse_time(str(value))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Workload:
    """One registered workload (`GET /v1/workloads/{id}`, list items, registration)."""

    id: str
    kind: str
    state: str
    labels: dict[str, str]
    status_url: str | None
    last_seen_at: datetime | None
    last_seq: int | None
    state_changed_at: datetime
    created_at: datetime
    stale: bool
    # None when statusd has no main API to sync to; else False while a transition waits for it.
    synced: bool | None
    generation: int
    flapping: bool = False
    silenced: bool = False
    # The workload this one depends on (named at registration); None without one.
    parent: str | None = None
    # The parent while it is UNREACHABLE, LOST or stale: this workload's alerts are held.
    suppressed_by: str | None = None

    @classmethod
    def from_json(cls, doc: JSON) -> Workload:
        synced = doc.get("synced")
        return cls(
            id=str(doc["id"]),
            kind=str(doc["kind"]),
            state=str(doc["state"]),
            labels={str(k): str(v) for k, v in (doc.get("labels") or {}).items()},
            status_url=doc.get("status_url"),
            last_seen_at=_time_or_none(doc.get("last_seen_at")),
            last_seq=_int_or_none(doc.get("last_seq")),
            state_changed_at=parse_time(doc["state_changed_at"]),
            created_at=parse_time(doc["created_at"]),
            stale=bool(doc["stale"]),
            synced=None if synced is None else bool(synced),
            generation=int(doc["generation"]),
            flapping=bool(doc.get("flapping", False)),
            silenced=bool(doc.get("silenced", False)),
            parent=_str_or_none(doc.get("parent")),
            suppressed_by=_str_or_none(doc.get("suppressed_by")),
        )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Registered:
    """A registration's answer: the workload and the token its container heartbeats with."""

    workload: Workload
    heartbeat_token: str

    @classmethod
    def from_json(cls, doc: JSON) -> Registered:
        return cls(Workload.from_json(doc), str(doc["heartbeat_token"]))


@dataclass(frozen=True)
class Registration:
    """One item of `register_many`: what `register` takes."""

    id: str
    kind: str
    status_url: str | None = None
    labels: Mapping[str, str] | None = None
    # A workload registered already (never this one): while it is down, this one's alerts wait.
    parent: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "kind": self.kind}
        if self.status_url is not None:
            body["status_url"] = self.status_url
        if self.labels is not None:
            body["labels"] = dict(self.labels)
        if self.parent is not None:
            body["parent"] = self.parent
        return body


@dataclass(frozen=True)
class RegistrationResult:
    """One item's outcome in `register_many`, in the order given: registered, or its error."""

    id: str
    status: int  # 201, or the item's own 409 / 422 ...
    registered: Registered | None = None
    error: StatusdApiError | None = None

    @property
    def ok(self) -> bool:
        return self.registered is not None

    def unwrap(self) -> Registered:
        """The registration, or the item's exception raised."""
        if self.registered is None:
            raise self.error or StatusdApiError(f"{self.id}: HTTP {self.status}")
        return self.registered

    @classmethod
    def from_item(cls, workload_id: str, doc: JSON) -> RegistrationResult:
        """A batch answer's item: `{"status": 201, ...}` or `{"status": 4xx, "error", ...}`.

        The workload may be the item itself or nested under `workload`; the token beside it."""
        status = int(doc.get("status", 0))
        if 200 <= status < 300:
            nested = doc.get("workload")
            fields = dict(nested) if isinstance(nested, Mapping) else dict(doc)
            fields.setdefault("heartbeat_token", doc.get("heartbeat_token"))
            return cls(workload_id, status, registered=Registered.from_json(fields))
        return cls(workload_id, status, error=from_answer(status, doc, {}))


@dataclass(frozen=True)
class Transition:
    """One applied change in a workload's history (also what `watch()` yields)."""

    id: int
    workload_id: str
    kind: str
    from_state: str
    to: str
    source: str
    reason: str | None
    actor: str | None
    seq: int | None
    recorded_at: datetime
    observed_at: datetime | None = None
    generation: int | None = None

    @classmethod
    def from_json(cls, doc: JSON) -> Transition:
        return cls(
            id=int(doc["id"]),
            workload_id=str(doc["workload_id"]),
            kind=str(doc["kind"]),
            from_state=str(doc["from"]),
            to=str(doc["to"]),
            source=str(doc["source"]),
            reason=doc.get("reason"),
            actor=doc.get("actor"),
            seq=_int_or_none(doc.get("seq")),
            recorded_at=parse_time(doc["recorded_at"]),
            observed_at=_time_or_none(doc.get("observed_at")),
            generation=_int_or_none(doc.get("generation")),
        )


@dataclass(frozen=True)
class TransitionResult:
    """`transition()`: `applied` (with the new history row) or `unchanged` (already there)."""

    outcome: str
    state: str
    transition: Transition | None

    @classmethod
    def from_json(cls, doc: JSON) -> TransitionResult:
        row = doc.get("transition")
        return cls(
            outcome=str(doc["outcome"]),
            state=str(doc["state"]),
            transition=None if row is None else Transition.from_json(row),
        )


@dataclass(frozen=True)
class Deleted:
    """A deregistered workload or an ended silence."""

    id: str
    deleted_at: datetime | None

    @classmethod
    def from_json(cls, doc: JSON) -> Deleted:
        return cls(str(doc["id"]), _time_or_none(doc.get("deleted_at")))


@dataclass(frozen=True)
class Silence:
    """Alerts of matching workloads held back until `until` (they stay tracked and shown)."""

    id: str
    match: dict[str, str]
    until: datetime
    reason: str
    created_at: datetime
    active: bool

    @classmethod
    def from_json(cls, doc: JSON) -> Silence:
        return cls(
            id=str(doc["id"]),
            match={str(k): str(v) for k, v in doc["match"].items()},
            until=parse_time(doc["until"]),
            reason=str(doc["reason"]),
            created_at=parse_time(doc["created_at"]),
            active=bool(doc["active"]),
        )


@dataclass(frozen=True)
class Maintenance:
    """A maintenance window: one-off (`start`/`end`) or recurring (`schedule` in `timezone`,
    each occurrence `duration_s` long). Matching workloads raise no alert and are not judged
    stale inside it."""

    id: str
    match: dict[str, str]
    reason: str
    created_at: datetime
    active: bool
    start: datetime | None = None
    end: datetime | None = None
    schedule: str | None = None
    duration_s: int | None = None
    timezone: str | None = None
    next_start: datetime | None = None  # the occurrence in force, else the next one
    next_end: datetime | None = None

    @classmethod
    def from_json(cls, doc: JSON) -> Maintenance:
        def time_or_none(name: str) -> datetime | None:
            value = doc.get(name)
            return parse_time(value) if value is not None else None

        duration = doc.get("duration_s")
        return cls(
            id=str(doc["id"]),
            match={str(k): str(v) for k, v in doc["match"].items()},
            reason=str(doc["reason"]),
            created_at=parse_time(doc["created_at"]),
            active=bool(doc["active"]),
            start=time_or_none("start"),
            end=time_or_none("end"),
            schedule=doc.get("schedule"),
            duration_s=int(duration) if duration is not None else None,
            timezone=doc.get("timezone"),
            next_start=time_or_none("next_start"),
            next_end=time_or_none("next_end"),
        )


@dataclass(frozen=True)
class Report:
    """A report or probe answered as JSON (`stale_report`, `summary`, `readiness`...): the
    document as statusd sent it; its fields are in the served OpenAPI document."""

    data: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed (`keys()`): never its secret."""

    id: str
    name: str
    scope: str  # read, write or admin
    labels: dict[str, str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_json(cls, doc: JSON) -> ApiKey:
        return cls(
            id=str(doc["id"]),
            name=str(doc["name"]),
            scope=str(doc["scope"]),
            labels={str(k): str(v) for k, v in (doc.get("labels") or {}).items()},
            created_at=parse_time(doc["created_at"]),
            expires_at=_time_or_none(doc.get("expires_at")),
            revoked_at=_time_or_none(doc.get("revoked_at")),
        )


@dataclass(frozen=True)
class CreatedKey:
    """`create_key()`: the key itself is in this answer only (statusd keeps a digest)."""

    id: str
    key: str
    name: str
    scope: str
    labels: dict[str, str]
    expires_at: datetime | None

    @classmethod
    def from_json(cls, doc: JSON) -> CreatedKey:
        return cls(
            id=str(doc["id"]),
            key=str(doc["key"]),
            name=str(doc["name"]),
            scope=str(doc["scope"]),
            labels={str(k): str(v) for k, v in (doc.get("labels") or {}).items()},
            expires_at=_time_or_none(doc.get("expires_at")),
        )


@dataclass(frozen=True)
class AuditEntry:
    """One mutating call (or sign-in attempt) in the audit trail."""

    id: int
    at: datetime
    actor_id: str
    actor_name: str
    action: str
    target: str | None
    outcome: int  # the HTTP status answered
    client_address: str | None

    @classmethod
    def from_json(cls, doc: JSON) -> AuditEntry:
        return cls(
            id=int(doc["id"]),
            at=parse_time(doc["at"]),
            actor_id=str(doc["actor_id"]),
            actor_name=str(doc["actor_name"]),
            action=str(doc["action"]),
            target=doc.get("target"),
            outcome=int(doc["outcome"]),
            client_address=doc.get("client_address"),
        )
