"""Strict input checks for the status API: bodies and query strings, each error naming its field.

Nothing here touches storage: handlers validate everything first, so bad input never writes.
Status codes: 400 for malformed JSON / bad query parameters, 413 for an oversize body, 422 for a
well-formed body whose fields are wrong (unknown field, wrong type, bad value).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiMapping

from statusd.errors import BadInput
from statusd.lifecycle import Kind, State

WORKLOAD_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,200}")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9._/-]{1,100}")  # no ':' so `label=k:v` filters split cleanly
MAX_LABELS = 64
MAX_LABEL_VALUE = 500
MAX_REASON = 1000
MAX_LIMIT = 500
DEFAULT_LIMIT = 100
_CURSOR_PREFIX = "v1:"
# Integer query parameters end up in SQL: keep them inside BIGINT (SQLite raises OverflowError
# beyond it) and to ASCII digits (int() also takes "\u0661", "+1", " 1" and "1_0").
MAX_INT64 = 2**63 - 1
_QUERY_INT_RE = re.compile(r"[0-9]{1,19}")


async def read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, at most `max_bytes` long (413 beyond, checked while reading)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        # Read in pieces so a chunked body without Content-Length cannot make us buffer more than the cap.
        chunk = await request.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise BadInput(
            "request body is empty: send a JSON object",
            field="body",
            status=400,
            error="malformed_json",
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(
            f"body is not valid JSON: {exc}", field="body", status=400, error="malformed_json"
        ) from exc
    if not isinstance(body, dict):
        raise BadInput(
            f"body must be a JSON object, not {_json_type(body)}",
            field="body",
            status=422,
            error="invalid_body",
        )
    return body


def _too_large(max_bytes: int) -> BadInput:
    return BadInput(
        f"body is larger than {max_bytes} bytes (STATUSD_MAX_BODY_BYTES)",
        field="body",
        status=413,
        error="body_too_large",
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def reject_unknown_fields(body: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for name in body:
        if name not in allowed:
            raise BadInput(
                f"unknown field {name!r}; allowed: {', '.join(sorted(allowed))}",
                field=name,
                error="unknown_field",
            )


def _string(
    body: Mapping[str, Any], name: str, *, required: bool, max_len: int | None = None
) -> str | None:
    if name not in body or body[name] is None:
        if required:
            raise BadInput(f"field {name!r} is required", field=name, error="missing_field")
        return None
    value = body[name]
    if not isinstance(value, str):
        raise BadInput(
            f"field {name!r} must be a string, not {_json_type(value)}",
            field=name,
            error="invalid_type",
        )
    if max_len is not None and len(value) > max_len:
        raise BadInput(
            f"field {name!r} is longer than {max_len} characters", field=name, error="invalid_value"
        )
    return value


def parse_workload_id(value: str, field_name: str = "id") -> str:
    if not WORKLOAD_ID_RE.fullmatch(value):
        raise BadInput(
            f"{field_name!r} must be 1-200 characters of A-Z a-z 0-9 . _ : -",
            field=field_name,
            error="invalid_value",
        )
    return value


def _kind(value: str, field_name: str, status: int = 422, error: str = "invalid_value") -> Kind:
    try:
        return Kind(value)
    except ValueError:
        raise BadInput(
            f"unknown kind {value!r}; one of {', '.join(k.value for k in Kind)}",
            field=field_name,
            status=status,
            error=error,
        ) from None


def _state(value: str, field_name: str, status: int = 422, error: str = "invalid_value") -> State:
    try:
        return State(value)
    except ValueError:
        raise BadInput(
            f"unknown state {value!r}; one of {', '.join(s.value for s in State)}",
            field=field_name,
            status=status,
            error=error,
        ) from None


def _labels(body: Mapping[str, Any]) -> dict[str, str]:
    value = body.get("labels")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(
            f"field 'labels' must be an object, not {_json_type(value)}",
            field="labels",
            error="invalid_type",
        )
    if len(value) > MAX_LABELS:
        raise BadInput(f"at most {MAX_LABELS} labels", field="labels", error="invalid_value")
    for key, item in value.items():
        if not LABEL_KEY_RE.fullmatch(key):
            raise BadInput(
                f"label key {key!r} must be 1-100 characters of A-Z a-z 0-9 . _ / -",
                field=f"labels.{key}",
                error="invalid_value",
            )
        if not isinstance(item, str):
            raise BadInput(
                f"label {key!r} must be a string, not {_json_type(item)}",
                field=f"labels.{key}",
                error="invalid_type",
            )
        if len(item) > MAX_LABEL_VALUE:
            raise BadInput(
                f"label {key!r} is longer than {MAX_LABEL_VALUE} characters",
                field=f"labels.{key}",
                error="invalid_value",
            )
    return dict(value)


@dataclass(frozen=True, slots=True)
class Registration:
    id: str
    kind: Kind
    status_url: str | None
    labels: dict[str, str]


REGISTRATION_FIELDS = frozenset({"id", "kind", "status_url", "labels"})


def parse_registration(body: Mapping[str, Any]) -> Registration:
    """POST /v1/workloads body -> Registration (status_url safety is checked by the handler)."""
    reject_unknown_fields(body, REGISTRATION_FIELDS)
    workload_id = parse_workload_id(_string(body, "id", required=True) or "")
    kind = _kind(_string(body, "kind", required=True) or "", "kind")
    status_url = _string(body, "status_url", required=False, max_len=2048)
    return Registration(workload_id, kind, status_url or None, _labels(body))


@dataclass(frozen=True, slots=True)
class TransitionRequest:
    to: State
    reason: str | None


TRANSITION_FIELDS = frozenset({"to", "reason"})


def parse_transition_request(body: Mapping[str, Any]) -> TransitionRequest:
    """POST /v1/workloads/{id}/transitions body -> TransitionRequest."""
    reject_unknown_fields(body, TRANSITION_FIELDS)
    to = _state(_string(body, "to", required=True) or "", "to")
    return TransitionRequest(to, _string(body, "reason", required=False, max_len=MAX_REASON))


# -- query strings ------------------------------------------------------------------------------


def _query_error(message: str, name: str) -> BadInput:
    return BadInput(message, field=name, status=400, error="invalid_query")


def reject_unknown_params(query: MultiMapping[str], allowed: frozenset[str]) -> None:
    for name in query:
        if name not in allowed:
            raise _query_error(
                f"unknown query parameter {name!r}; allowed: {', '.join(sorted(allowed))}", name
            )


def _single(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise _query_error(f"query parameter {name!r} given more than once", name)
    return values[0] if values else None


def parse_query_int(raw: str, name: str, *, low: int = 0, high: int = MAX_INT64) -> int:
    """An integer query parameter (or header): ASCII digits, low..high; 400 naming `name` if not."""
    value = int(raw) if _QUERY_INT_RE.fullmatch(raw) else None
    if value is None or not low <= value <= high:
        raise _query_error(f"{name} must be an integer {low}..{high}, not {raw[:40]!r}", name)
    return value


def parse_limit(query: MultiMapping[str], default: int = DEFAULT_LIMIT) -> int:
    raw = _single(query, "limit")
    return default if raw is None else parse_query_int(raw, "limit", low=1, high=MAX_LIMIT)


def encode_cursor(last_id: str) -> str:
    """Opaque keyset cursor: the last id of a page (clients must not build or parse it)."""
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + last_id).encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> str:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _query_error("cursor is not one this API issued", "cursor") from None
    if not text.startswith(_CURSOR_PREFIX) or not WORKLOAD_ID_RE.fullmatch(
        text[len(_CURSOR_PREFIX) :]
    ):
        raise _query_error("cursor is not one this API issued", "cursor")
    return text[len(_CURSOR_PREFIX) :]


def _bool(raw: str, name: str) -> bool:
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _query_error(f"{name} must be true or false, not {raw!r}", name)


@dataclass(frozen=True, slots=True)
class WorkloadQuery:
    kind: Kind | None = None
    state: State | None = None
    stale: bool | None = None
    labels: dict[str, str] = field(default_factory=dict)
    limit: int = DEFAULT_LIMIT
    after: str | None = None
    id_prefix: str | None = None  # the status page's search box: ids starting with this


WORKLOAD_QUERY_PARAMS = frozenset(
    {"kind", "state", "stale", "label", "limit", "cursor", "id_prefix"}
)
ID_PREFIX_RE = re.compile(r"[A-Za-z0-9._:-]{0,200}")


def parse_workload_query(query: MultiMapping[str]) -> WorkloadQuery:
    """GET /v1/workloads query string -> WorkloadQuery (400 naming the parameter when bad)."""
    reject_unknown_params(query, WORKLOAD_QUERY_PARAMS)
    kind_raw, state_raw, stale_raw = (
        _single(query, "kind"),
        _single(query, "state"),
        _single(query, "stale"),
    )
    labels: dict[str, str] = {}
    for raw in query.getall("label", []):
        key, sep, value = raw.partition(":")
        if not sep or not LABEL_KEY_RE.fullmatch(key):
            raise _query_error(f"label filter must look like key:value, not {raw!r}", "label")
        if key in labels and labels[key] != value:
            raise _query_error(f"label {key!r} filtered with two different values", "label")
        labels[key] = value
    cursor = _single(query, "cursor")
    id_prefix = _single(query, "id_prefix")
    if id_prefix is not None and not ID_PREFIX_RE.fullmatch(id_prefix):
        raise _query_error(
            f"id_prefix may hold only the characters of a workload id, not {id_prefix!r}",
            "id_prefix",
        )
    return WorkloadQuery(
        kind=_kind(kind_raw, "kind", status=400, error="invalid_query")
        if kind_raw is not None
        else None,
        state=_state(state_raw, "state", status=400, error="invalid_query")
        if state_raw is not None
        else None,
        stale=_bool(stale_raw, "stale") if stale_raw is not None else None,
        labels=labels,
        limit=parse_limit(query),
        after=decode_cursor(cursor) if cursor else None,
        id_prefix=id_prefix or None,
    )


HISTORY_QUERY_PARAMS = frozenset({"after", "limit"})


def parse_history_query(query: MultiMapping[str]) -> tuple[int, int]:
    """GET /v1/workloads/{id}/transitions query -> (after transition id, limit)."""
    reject_unknown_params(query, HISTORY_QUERY_PARAMS)
    raw = _single(query, "after")
    after = 0 if raw is None else parse_query_int(raw, "after")
    return after, parse_limit(query)
