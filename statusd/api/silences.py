"""Silence routes: POST/GET /v1/silences, DELETE /v1/silences/{id} (API token).

A silence holds back the alerts of matching workloads until `until`; they stay tracked and shown
(`"silenced": true`). The body is checked completely before anything is written; each problem is
a 422 naming its field (`match.kind`, `match.label`, `match.id`, `match`, `until`, `reason`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from statusd import silences
from statusd.api import validation
from statusd.api.auth import require_api_token
from statusd.api.errors import json_response
from statusd.app_keys import RUNTIME
from statusd.errors import BadInput
from statusd.lifecycle import Kind
from statusd.models import utcnow
from statusd.silences import Matcher

log = structlog.get_logger("statusd.api")

SILENCE_FIELDS = frozenset({"match", "until", "reason"})
MATCH_FIELDS = frozenset({"kind", "label", "id"})
SILENCE_QUERY_PARAMS = frozenset({"active"})
MAX_SILENCE_REASON = 1000


def _invalid(message: str, field: str, error: str = "invalid_value") -> BadInput:
    return BadInput(message, field=field, status=422, error=error)


def _match_string(match: Mapping[str, Any], name: str) -> str | None:
    value = match.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"match.{name} must be a string", f"match.{name}", "invalid_type")
    return value


def parse_matcher(value: object) -> Matcher:
    """The `match` object: any of kind, label ("key:value"), id; at least one."""
    if not isinstance(value, dict):
        raise _invalid(
            "match must be an object with kind, label and/or id", "match", "invalid_type"
        )
    for name in value:
        if name not in MATCH_FIELDS:
            raise _invalid(
                f"unknown matcher {name!r}; allowed: id, kind, label",
                f"match.{name}",
                "unknown_field",
            )
    kind_raw, label_raw, id_raw = (_match_string(value, n) for n in ("kind", "label", "id"))
    if kind_raw is None and label_raw is None and id_raw is None:
        raise _invalid("match is empty: a silence must name a kind, a label or an id", "match")
    kind = None
    if kind_raw is not None:
        try:
            kind = Kind(kind_raw)
        except ValueError:
            known = ", ".join(k.value for k in Kind)
            raise _invalid(f"unknown kind {kind_raw!r}; one of {known}", "match.kind") from None
    label = None
    if label_raw is not None:
        key, sep, label_value = label_raw.partition(":")
        if not sep or not validation.LABEL_KEY_RE.fullmatch(key):
            raise _invalid(
                f"match.label must look like key:value, not {label_raw!r}", "match.label"
            )
        if len(label_value) > validation.MAX_LABEL_VALUE:
            raise _invalid("match.label value is too long", "match.label")
        label = (key, label_value)
    if id_raw is not None and not validation.WORKLOAD_ID_RE.fullmatch(id_raw):
        raise _invalid("match.id must be 1-200 characters of A-Z a-z 0-9 . _ : -", "match.id")
    return Matcher(kind=kind, label=label, workload_id=id_raw)


def parse_until(value: object, now: datetime) -> datetime:
    """An ISO 8601 date-time with a UTC offset, in the future."""
    if not isinstance(value, str):
        raise _invalid("until must be an ISO 8601 date-time string", "until", "invalid_type")
    try:
        until = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(f"until {value[:60]!r} is not an ISO 8601 date-time", "until") from None
    if until.tzinfo is None:
        raise _invalid("until needs a UTC offset (e.g. 2026-12-01T08:00:00Z)", "until")
    if until <= now:
        raise _invalid("until is in the past: a silence must end in the future", "until")
    return until.astimezone(UTC)


def parse_silence(body: Mapping[str, Any], now: datetime) -> tuple[Matcher, datetime, str]:
    validation.reject_unknown_fields(body, SILENCE_FIELDS)
    for name in ("match", "until", "reason"):
        if body.get(name) is None:
            raise _invalid(f"field {name!r} is required", name, "missing_field")
    matcher = parse_matcher(body["match"])
    until = parse_until(body["until"], now)
    reason = body["reason"]
    if not isinstance(reason, str) or not reason.strip():
        raise _invalid("reason must be a non-empty string (who silenced it and why)", "reason")
    if len(reason) > MAX_SILENCE_REASON:
        raise _invalid(f"reason is longer than {MAX_SILENCE_REASON} characters", "reason")
    return matcher, until, reason


@require_api_token
async def create_silence(request: web.Request) -> web.Response:
    """POST /v1/silences -> 201 with the silence and its id."""
    rt = request.app[RUNTIME]
    body = await validation.read_json_object(request, rt.settings.max_body_bytes)
    now = utcnow()
    matcher, until, reason = parse_silence(body, now)
    record = await silences.create(rt.engine, matcher, until, reason)
    log.info("silence.created", silence_id=record.id, match=matcher.as_json(), until=str(until))
    return json_response(
        record.as_json(now), 201, headers={"Location": f"/v1/silences/{record.id}"}
    )


@require_api_token
async def list_silences(request: web.Request) -> web.Response:
    """GET /v1/silences[?active=true]: every silence (expired ones too), latest end first."""
    validation.reject_unknown_params(request.query, SILENCE_QUERY_PARAMS)
    raw = request.query.get("active")
    if raw is not None and raw not in ("true", "false"):
        raise BadInput("active must be true or false", field="active", status=400)
    rt = request.app[RUNTIME]
    now = utcnow()
    items = await silences.list_all(rt.engine, active_only=raw == "true")
    return json_response({"items": [s.as_json(now) for s in items], "count": len(items)})


@require_api_token
async def delete_silence(request: web.Request) -> web.Response:
    """DELETE /v1/silences/{id}: the silence ends now; matching workloads alert again."""
    silence_id = request.match_info["id"]
    rt = request.app[RUNTIME]
    if len(silence_id) > 36 or not await silences.remove(rt.engine, silence_id):
        raise BadInput(f"no silence {silence_id[:40]!r}", field="id", status=404, error="not_found")
    log.info("silence.deleted", silence_id=silence_id)
    return json_response({"id": silence_id, "deleted": True})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/silences", create_silence)
    app.router.add_get("/v1/silences", list_silences, allow_head=False)
    app.router.add_delete("/v1/silences/{id}", delete_silence)
