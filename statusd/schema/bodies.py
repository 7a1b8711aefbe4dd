"""Request bodies: what POST routes accept. Unknown fields are refused (extra="forbid")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from statusd.lifecycle import Kind, State
from statusd.schema.rules import (
    DEFAULT_MAX_QUIET_S,
    MAX_DETAIL_BYTES,
    MAX_INT64,
    MAX_REASON,
    MAX_STATUS_URL,
    STATUS_URL_PATTERN,
    STATUS_URL_RE,
)
from statusd.schema.types import AwareTime, LabelPair, Labels, WorkloadId, split_label


class Body(BaseModel):
    """A JSON object body: every field known, nothing coerced across JSON types."""

    # defer_build: pydantic builds a model's validator on its first use, not at import. A process
    # uses few of the schema's models (a worker or a CLI verb none of most), and building them all
    # cost every statusd process ~0.2 s of CPU at start.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class RegisterRequest(Body):
    id: WorkloadId
    kind: Kind
    status_url: Annotated[str, Field(max_length=MAX_STATUS_URL)] | None = Field(
        default=None,
        description="http(s) URL inside STATUSD_POLL_ALLOW_NETS (checked after DNS); no "
        "control characters",
        json_schema_extra={"pattern": STATUS_URL_PATTERN},
    )
    labels: Labels | None = None
    parent: WorkloadId | None = Field(
        default=None,
        description="the workload this one depends on (a node agent, for its containers): "
        "registered already, never itself; while it is UNREACHABLE or LOST this workload's "
        "unreachable/lost alerts are held (`suppressed_by`)",
    )

    @field_validator("parent")
    @classmethod
    def _not_itself(cls, parent: str | None, info: ValidationInfo) -> str | None:
        if parent is not None and parent == info.data.get("id"):
            raise PydanticCustomError("invalid_value", "a workload cannot be its own parent")
        return parent

    @field_validator("status_url")
    @classmethod
    def _no_control_characters(cls, url: str | None) -> str | None:
        if url is not None and not STATUS_URL_RE.fullmatch(url):
            bad = next(c for c in url if not STATUS_URL_RE.fullmatch(c))
            raise PydanticCustomError(
                "invalid_value",
                "status_url must not contain control characters (found U+{code:04X})",
                {"code": ord(bad)},
            )
        return url


class RegisterBatch(Body):
    """Many registrations at once, each item exactly a RegisterRequest and judged on its own: a
    bad item is that item's 422 and the others still register. The item count is capped by
    STATUSD_MAX_BATCH_ITEMS: `batch_max_items` writes it into the schema."""

    items: list[RegisterRequest] = Field(min_length=1)


# What the batch route validates before looking at any item: the same envelope, items unread.
RegisterBatchEnvelope: type[Body] = create_model(
    "RegisterBatchEnvelope",
    __base__=Body,
    items=(list[Any], Field(min_length=1)),
)


class PruneRequest(Body):
    dry_run: StrictBool = Field(
        default=False, description="count what would be deleted; delete nothing"
    )


class TransitionRequest(Body):
    to: State
    reason: Annotated[str, Field(max_length=MAX_REASON)] | None = None


class SilenceMatch(Body):
    """Every matcher given must match; at least one."""

    kind: Kind | None = None
    label: LabelPair | None = Field(default=None, description="key:value")
    id: WorkloadId | None = None

    @model_validator(mode="after")
    def _names_something(self) -> SilenceMatch:
        if self.kind is None and self.label is None and self.id is None:
            raise PydanticCustomError(
                "invalid_value", "match is empty: a silence must name a kind, a label or an id"
            )
        return self

    @property
    def label_pair(self) -> tuple[str, str] | None:
        return split_label(self.label) if self.label is not None else None


class SilenceRequest(Body):
    match: SilenceMatch
    until: AwareTime = Field(description="in the future")
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON)] = Field(
        description="who silenced it and why"
    )

    @field_validator("until")
    @classmethod
    def _in_the_future(cls, until: datetime, info: ValidationInfo) -> datetime:
        now = (info.context or {}).get("now")
        if now is not None and until <= now:
            raise PydanticCustomError(
                "invalid_value", "until is in the past: a silence must end in the future"
            )
        return until

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, reason: str) -> str:
        if not reason.strip():
            raise PydanticCustomError(
                "invalid_value", "reason must not be blank (who silenced it and why)"
            )
        return reason


MAX_MAINTENANCE_S = 31 * 86400  # one occurrence of a recurring window lasts at most a month


def _given(info: ValidationInfo, name: str) -> bool:
    return info.data.get(name) is not None


def _in_utc(value: datetime | None) -> datetime | None:
    """The time in UTC; refused when UTC cannot hold it (year 9999 at -14:00 is year 10000)."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("invalid_value", "out of range once in UTC") from None


class MaintenanceRequest(Body):
    """A maintenance window: `start`/`end`, or a recurring `schedule` + `duration_s` (+
    `timezone`, default UTC). Checked in field order, so each problem names its field."""

    match: SilenceMatch
    schedule: Annotated[str, Field(max_length=200)] | None = Field(
        default=None,
        description="five-field cron (minute hour day-of-month month day-of-week), read in "
        "`timezone`; each occurrence starts a window",
        validate_default=True,
    )
    duration_s: int | None = Field(
        default=None,
        gt=0,
        le=MAX_MAINTENANCE_S,
        description="how long each occurrence of `schedule` lasts",
        validate_default=True,
    )
    timezone: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="IANA time zone of `schedule` (default UTC)"
    )
    start: AwareTime | None = Field(default=None, validate_default=True)
    end: AwareTime | None = Field(
        default=None, description="after `start`, in the future", validate_default=True
    )
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON)] = Field(
        description="who planned it and why"
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        if schedule is None:
            return None
        if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
            raise PydanticCustomError(
                "invalid_value",
                "'{text}' is not a five-field cron expression (e.g. '0 2 * * *')",
                {"text": schedule[:60]},
            )
        try:  # valid syntax for a date that never comes (30 February)
            croniter(schedule).get_next(float)
        except CroniterError:
            raise PydanticCustomError(
                "invalid_value", "'{text}' never occurs", {"text": schedule[:60]}
            ) from None
        return schedule

    @field_validator("duration_s")
    @classmethod
    def _with_schedule(cls, duration: int | None, info: ValidationInfo) -> int | None:
        if duration is None and _given(info, "schedule"):
            raise PydanticCustomError("missing", "duration_s is required with a schedule")
        if duration is not None and not _given(info, "schedule"):
            raise PydanticCustomError("invalid_value", "duration_s belongs to a schedule")
        return duration

    @field_validator("timezone")
    @classmethod
    def _iana(cls, zone: str | None, info: ValidationInfo) -> str | None:
        if zone is None:
            return None
        if not _given(info, "schedule"):
            raise PydanticCustomError("invalid_value", "timezone belongs to a schedule")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "invalid_value",
                "'{zone}' is not an IANA time zone (e.g. Europe/Berlin)",
                {"zone": zone[:64]},
            ) from None
        return zone

    @field_validator("start")
    @classmethod
    def _one_kind(cls, start: datetime | None, info: ValidationInfo) -> datetime | None:
        start = _in_utc(start)
        if start is not None and _given(info, "schedule"):
            raise PydanticCustomError(
                "invalid_value", "give either start/end or a schedule, not both"
            )
        if start is None and "schedule" in info.data and info.data["schedule"] is None:
            raise PydanticCustomError("missing", "start is required (or a schedule)")
        return start

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: datetime | None, info: ValidationInfo) -> datetime | None:
        end = _in_utc(end)
        start = info.data.get("start")
        if end is not None and _given(info, "schedule"):
            raise PydanticCustomError(
                "invalid_value", "give either start/end or a schedule, not both"
            )
        if start is None:
            return end
        if end is None:
            raise PydanticCustomError("missing", "end is required with start")
        if end <= start:
            raise PydanticCustomError("invalid_value", "end is before start")
        now = (info.context or {}).get("now")
        if now is not None and end <= now:
            raise PydanticCustomError(
                "invalid_value", "end is in the past: a maintenance window must end in the future"
            )
        return end

    @field_validator("reason")
    @classmethod
    def _reason_not_blank(cls, reason: str) -> str:
        if not reason.strip():
            raise PydanticCustomError(
                "invalid_value", "reason must not be blank (who planned it and why)"
            )
        return reason


# -- heartbeats: the ingest hot path checks these by hand (statusd.ingest.heartbeat_checks, measured
# faster); these models state the same rules from the same constants for the OpenAPI document,
# and tests/test_heartbeat_schema_agrees_with_ingest.py holds the two together.


class Heartbeat(Body):
    workload_id: WorkloadId
    status: State = Field(description="a state the token's kind can report")
    seq: int = Field(
        ge=0, le=MAX_INT64, description="per-workload increasing (a millisecond clock works)"
    )
    detail: str | None = Field(
        default=None,
        max_length=MAX_DETAIL_BYTES,
        description=f"at most {MAX_DETAIL_BYTES} bytes once UTF-8 encoded",
    )
    quiet_for_s: int | None = Field(
        default=None,
        gt=0,
        le=DEFAULT_MAX_QUIET_S,
        description="I will be silent this many seconds: do not judge me stale before then "
        f"(at most STATUSD_MAX_QUIET_S, default {DEFAULT_MAX_QUIET_S})",
    )


class BatchHeartbeat(Heartbeat):
    token: str = Field(min_length=1, description="this workload's heartbeat_token")


class HeartbeatBatch(Body):
    """A node agent's report for many containers; each item carries its own token. The item
    count is capped by STATUSD_MAX_BATCH_ITEMS: `batch_max_items` writes it into the schema."""

    items: list[BatchHeartbeat] = Field(min_length=1)


def quiet_maximum(schema: dict[str, Any], max_quiet_s: int) -> dict[str, Any]:
    """A heartbeat's JSON schema (Heartbeat, BatchHeartbeat) with the configured
    STATUSD_MAX_QUIET_S as `quiet_for_s`'s maximum."""
    quiet = schema["properties"]["quiet_for_s"]
    variants = [
        dict(v, maximum=max_quiet_s) if v.get("type") == "integer" else v
        for v in quiet.get("anyOf", [])
    ]
    patched = dict(quiet, anyOf=variants) if variants else dict(quiet, maximum=max_quiet_s)
    return {**schema, "properties": {**schema["properties"], "quiet_for_s": patched}}


def batch_max_items(schema: dict[str, Any], max_items: int) -> dict[str, Any]:
    """A batch's JSON schema (HeartbeatBatch, RegisterBatch) with the configured
    STATUSD_MAX_BATCH_ITEMS as maxItems."""
    items = dict(schema["properties"]["items"], maxItems=max_items)
    return {**schema, "properties": {**schema["properties"], "items": items}}


class LoginForm(Body):
    """POST /login, as a form (application/x-www-form-urlencoded or multipart/form-data)."""

    token: str = Field(description="STATUSD_API_TOKEN")
