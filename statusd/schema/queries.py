"""Query strings: what GET routes accept. Unknown parameters are refused (extra="forbid"); a
parameter given twice is refused unless its field is a list (statusd.schema.bad_input)."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from statusd.lifecycle import Kind, State
from statusd.schema.rules import (
    DEFAULT_AVAILABILITY_WINDOW_S,
    DEFAULT_LIMIT,
    DEFAULT_RECENT_LIMIT,
    LABEL_KEY_PATTERN,
    MAX_AVAILABILITY_WINDOW_S,
    MAX_HISTORY_SAMPLES,
    MAX_HISTORY_WINDOW_S,
    WORKLOAD_ID_RE,
)
from statusd.schema.types import (
    AwareTime,
    Duration,
    IdPrefix,
    KindList,
    KindParam,
    LabelPair,
    Limit,
    QueryInt,
    WorkloadId,
    split_label,
)

_CURSOR_PREFIX = "v1:"


def encode_cursor(last_id: str) -> str:
    """Opaque keyset cursor: the last id of a page (clients must not build or parse it)."""
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + last_id).encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> str | None:
    """The id a cursor names, or None when this API did not issue it."""
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    last_id = text[len(_CURSOR_PREFIX) :]
    if not text.startswith(_CURSOR_PREFIX) or not WORKLOAD_ID_RE.fullmatch(last_id):
        return None
    return last_id


class Query(BaseModel):
    # Built on first use, as statusd.schema.bodies.Body explains.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, value in map(split_label, pairs):
        if labels.setdefault(key, value) != value:
            raise PydanticCustomError(
                "invalid_value", "label '{key}' filtered with two different values", {"key": key}
            )
    return labels


def _one_value_per_key(pairs: list[str]) -> list[str]:
    _labels(pairs)
    return pairs


# `label` filters, all of which must match: one key asked for two values could match nothing.
LabelFilters = Annotated[list[LabelPair], AfterValidator(_one_value_per_key)]


class WorkloadQuery(Query):
    """GET /v1/workloads."""

    kind: KindParam | None = None
    state: State | None = None
    stale: bool | None = Field(
        default=None,
        description="applied after the SQL page; a page may hold fewer than `limit` items",
    )
    label: LabelFilters = Field(
        default_factory=list, description="key:value, repeatable (all must match)"
    )
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = Field(default=None, description="next_cursor of the previous page")
    id_prefix: IdPrefix | None = Field(
        default=None, description="only ids starting with this (case-sensitive): the page's search"
    )

    @field_validator("cursor")
    @classmethod
    def _issued_here(cls, cursor: str | None) -> str | None:
        if cursor and decode_cursor(cursor) is None:
            raise PydanticCustomError("invalid_value", "cursor is not one this API issued")
        return cursor

    @property
    def labels(self) -> dict[str, str]:
        return _labels(self.label)

    @property
    def after(self) -> str | None:
        """The id the page starts after (from the cursor)."""
        return decode_cursor(self.cursor) if self.cursor else None


class HistoryQuery(Query):
    """GET /v1/workloads/{id}/transitions."""

    after: QueryInt = Field(default=0, description="a transition id: next_after of the last page")
    limit: Limit = DEFAULT_LIMIT


class SilenceQuery(Query):
    """GET /v1/silences."""

    active: bool | None = Field(default=None, description="only the silences in force")


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


# A report's `format` (`csv` and `CSV` alike).
ReportFormat = Annotated[Literal["json", "csv"], BeforeValidator(_lower)]


class ReportQuery(Query):
    """What the reports filter on: kinds and labels (all must match)."""

    kind: KindList = Field(default_factory=list, description="repeatable or a comma list")
    label: list[LabelPair] = Field(
        default_factory=list, description="key:value, repeatable (all must match)"
    )

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return tuple(dict.fromkeys(self.kind))

    @property
    def labels(self) -> tuple[tuple[str, str], ...]:
        return tuple(split_label(pair) for pair in self.label)


class StaleQuery(ReportQuery):
    """GET /v1/reports/stale (and `statusd report stale`)."""

    older_than: Duration = Field(
        default=0.0, description="minimum silence", json_schema_extra={"default": "0"}
    )
    format: ReportFormat = "json"


class StreamQuery(Query):
    """GET /v1/events: filters and the resume point (the Last-Event-ID header wins)."""

    kind: KindParam | None = None
    workload_id: str | None = None
    last_event_id: QueryInt | None = Field(
        default=None, description="resume after this transition id (or the Last-Event-ID header)"
    )


class RecentQuery(StreamQuery):
    """GET /v1/reports/transitions: newest first, the same filters as the stream."""

    limit: Limit = DEFAULT_RECENT_LIMIT


class FleetHistoryQuery(Query):
    """GET /v1/reports/history: counts by state at each step of the window."""

    window: Duration = Field(
        default=3600.0, description="how far back", json_schema_extra={"default": "1h"}
    )
    step: Duration = Field(
        default=60.0, description="one sample per step", json_schema_extra={"default": "1m"}
    )
    kind: KindParam | None = None

    @field_validator("window")
    @classmethod
    def _window(cls, window: float) -> float:
        if window <= 0:
            raise PydanticCustomError("invalid_value", "window must be more than 0")
        if window > MAX_HISTORY_WINDOW_S:
            raise PydanticCustomError(
                "invalid_value", f"window is at most {MAX_HISTORY_WINDOW_S // 86400} days"
            )
        return window

    @field_validator("step")
    @classmethod
    def _step(cls, step: float, info: ValidationInfo) -> float:
        if step <= 0:
            raise PydanticCustomError("invalid_value", "step must be more than 0")
        window = info.data.get("window")
        if window is not None and window / step > MAX_HISTORY_SAMPLES:
            raise PydanticCustomError(
                "invalid_value", f"window/step must be at most {MAX_HISTORY_SAMPLES} samples"
            )
        return step


GROUP_BY_PATTERN = f"^(kind|label:{LABEL_KEY_PATTERN[1:-1]})$"


class AvailabilityQuery(ReportQuery):
    """GET /v1/reports/availability (and `statusd report availability`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    label: LabelFilters = Field(
        default_factory=list, description="key:value, repeatable (all must match)"
    )
    id: list[WorkloadId] = Field(default_factory=list, description="workload ids, repeatable")
    from_: AwareTime | None = Field(
        default=None,
        alias="from",
        description="start of the window (ISO 8601 with offset); default: `to` minus 30 days",
    )
    to: AwareTime | None = Field(
        default=None, validate_default=True, description="end of the window; default: now"
    )
    group_by: str | None = Field(
        default=None,
        pattern=GROUP_BY_PATTERN,
        description="`kind`, or `label:KEY` (one group per value of that label)",
    )
    format: ReportFormat = "json"

    @field_validator("to")
    @classmethod
    def _after_from(cls, to: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("from_")
        end = to or datetime.now(UTC)
        if start is not None and end <= start:
            raise PydanticCustomError("invalid_value", "`to` must be after `from`")
        if start is not None and (end - start).total_seconds() > MAX_AVAILABILITY_WINDOW_S:
            raise PydanticCustomError(
                "invalid_value",
                f"the window is at most {MAX_AVAILABILITY_WINDOW_S // 86400} days",
            )
        return to

    @property
    def window(self) -> tuple[datetime, datetime]:
        """(from, to) with the defaults filled in."""
        end = self.to or datetime.now(UTC)
        start = self.from_ or end - timedelta(seconds=DEFAULT_AVAILABILITY_WINDOW_S)
        return start, end
