"""Field types the models share; each carries its rule (statusd.schema.rules) and its JSON schema."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from statusd.lifecycle import Kind
from statusd.schema.rules import (
    ID_PREFIX_PATTERN,
    LABEL_KEY_PATTERN,
    MAX_INT64,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_LIMIT,
    WORKLOAD_ID_PATTERN,
)

WorkloadId = Annotated[str, Field(pattern=WORKLOAD_ID_PATTERN)]
IdPrefix = Annotated[str, Field(pattern=ID_PREFIX_PATTERN)]
LabelKey = Annotated[str, Field(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, Field(max_length=MAX_LABEL_VALUE)]
# `key:value`: a label key, a colon, any value (the first colon splits: keys hold none).
LABEL_PAIR_PATTERN = f"{LABEL_KEY_PATTERN[:-1]}:[\\s\\S]{{0,{MAX_LABEL_VALUE}}}$"
LabelPair = Annotated[str, Field(pattern=LABEL_PAIR_PATTERN)]


def _keys_as_property_names(schema: dict[str, Any]) -> None:
    """pydantic states a keyed dict as patternProperties, which lets any other key through;
    propertyNames + additionalProperties says "every key matches" as the checker does."""
    ((pattern, values),) = schema.pop("patternProperties").items()
    schema["propertyNames"] = {"pattern": pattern}
    schema["additionalProperties"] = values


Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(max_length=MAX_LABELS, json_schema_extra=_keys_as_property_names),
]


def split_label(pair: str) -> tuple[str, str]:
    """A validated `key:value` -> (key, value)."""
    key, _, value = pair.partition(":")
    return key, value


# -- query strings: every value arrives as text ---------------------------------------------------

_ASCII_INT = re.compile(r"[0-9]{1,19}")


def _ascii_digits(value: object) -> object:
    # int() also takes "\u0661", "+1", " 1" and "1_0"; a query integer is plain ASCII digits.
    if isinstance(value, str) and not _ASCII_INT.fullmatch(value):
        raise PydanticCustomError("int_parsing", "must be an integer written in digits 0-9")
    return value


# Bounds before the validator: pydantic then states them as minimum/maximum in the JSON schema.
QueryInt = Annotated[int, Field(ge=0, le=MAX_INT64), BeforeValidator(_ascii_digits)]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT), BeforeValidator(_ascii_digits)]


def _kind_text(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


KindParam = Annotated[Kind, BeforeValidator(_kind_text)]


def _comma_list(value: object) -> object:
    """Repeated and/or comma-separated values (`?kind=a&kind=b,c`) as one list, blanks dropped."""
    if isinstance(value, list):
        return [p for v in value for p in (v.split(",") if isinstance(v, str) else [v]) if p != ""]
    return value


KindList = Annotated[list[KindParam], BeforeValidator(_comma_list)]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^\s*([0-9]+(\.[0-9]+)?|([0-9]+(\.[0-9]+)?[smhdSMHD])+)\s*$"


def parse_duration(value: object) -> float:
    """Seconds from `300`, `90s`, `5m`, `1h30m`, `2d` (never negative, never NaN or infinite)."""
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "a duration is text: 300, 90s, 5m, 1h30m, 2d")
    raw = value.strip().lower()
    try:
        seconds = float(raw)
    except ValueError:
        parts = _DURATION_PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise PydanticCustomError(
                "invalid_value",
                "'{text}' is not a duration (e.g. 300, 90s, 5m, 1h30m)",
                {"text": value[:40]},
            ) from None
        seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if not math.isfinite(seconds):  # float() takes "nan" and "1e999"; neither is a duration
        raise PydanticCustomError(
            "invalid_value", "'{text}' is not a finite duration", {"text": value[:40]}
        )
    if seconds < 0:
        raise PydanticCustomError("invalid_value", "a duration must not be negative")
    return seconds


Duration = Annotated[
    float,
    PlainValidator(parse_duration),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "description": "300, 90s, 5m, 1h30m, 2d"}
    ),
]


# -- times ----------------------------------------------------------------------------------------


def _aware_iso(value: object) -> datetime:
    """An ISO 8601 date-time string with a UTC offset (no unix numbers: JSON has no date type,
    and a bare number is too easy to send in the wrong unit)."""
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError(
            "invalid_value", "'{text}' is not an ISO 8601 date-time", {"text": value[:60]}
        ) from None
    if parsed.tzinfo is None:
        raise PydanticCustomError("invalid_value", "needs a UTC offset (e.g. 2026-12-01T08:00:00Z)")
    return parsed


AwareTime = Annotated[
    datetime,
    PlainValidator(_aware_iso),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
# Output only: the API writes times as ISO 8601 text it formatted itself (statusd.api.serializers).
IsoTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
