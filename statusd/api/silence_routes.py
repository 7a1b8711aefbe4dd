"""Silence routes: POST/GET /v1/silences, DELETE /v1/silences/{id} (write / read keys).

A silence's matcher can reach any team's workloads, so keys limited by labels are refused here.

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
from statusd.access.audit import AuditAction
from statusd.access.scopes import Scope
from statusd.api import request_checks
from statusd.api.auth import guard
from statusd.api.error_responses import created_response, model_response
from statusd.app_keys import RUNTIME
from statusd.errors import BadInput
from statusd.models import utcnow
from statusd.schema import responses
from statusd.schema.bad_input import parse_body, parse_query
from statusd.schema.bodies import SilenceRequest
from statusd.schema.queries import SilenceQuery
from statusd.schema.rules import MAX_SILENCE_ID
from statusd.silences import Matcher

log = structlog.get_logger("statusd.api")


def parse_silence(body: Mapping[str, Any], now: datetime) -> tuple[Matcher, datetime, str]:
    """A POST /v1/silences body (statusd.schema.bodies.SilenceRequest): matcher, end (UTC), reason."""
    request = parse_body(SilenceRequest, body, now=now)
    match = request.match
    matcher = Matcher(kind=match.kind, label=match.label_pair, workload_id=match.id)
    return matcher, request.until.astimezone(UTC), request.reason


@guard(Scope.WRITE, action=AuditAction.SILENCE_CREATE, fleet_wide=True)
async def create_silence(request: web.Request) -> web.Response:
    """POST /v1/silences -> 201 with the silence and its id."""
    rt = request.app[RUNTIME]
    body = await request_checks.read_json_object(request, rt.settings.max_body_bytes)
    now = utcnow()
    matcher, until, reason = parse_silence(body, now)
    record = await silences.create(rt.engine, matcher, until, reason)
    log.info("silence.created", silence_id=record.id, match=matcher.as_json(), until=str(until))
    silence = responses.Silence.model_validate(record.as_json(now))
    return created_response(silence, f"/v1/silences/{record.id}")


@guard(Scope.READ, fleet_wide=True)
async def list_silences(request: web.Request) -> web.Response:
    """GET /v1/silences[?active=true]: every silence (expired ones too), latest end first."""
    query = parse_query(SilenceQuery, request.query)
    rt = request.app[RUNTIME]
    now = utcnow()
    items = await silences.list_all(rt.engine, active_only=query.active is True)
    page = [responses.Silence.model_validate(s.as_json(now)) for s in items]
    return model_response(responses.SilencePage(items=page, count=len(page)))


@guard(Scope.WRITE, action=AuditAction.SILENCE_DELETE, fleet_wide=True)
async def delete_silence(request: web.Request) -> web.Response:
    """DELETE /v1/silences/{id}: the silence ends now; matching workloads alert again."""
    silence_id = request.match_info["id"]
    rt = request.app[RUNTIME]
    if len(silence_id) > MAX_SILENCE_ID or not await silences.remove(rt.engine, silence_id):
        raise BadInput(f"no silence {silence_id[:40]!r}", field="id", status=404, error="not_found")
    log.info("silence.deleted", silence_id=silence_id)
    return model_response(responses.Deleted(id=silence_id))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/silences", create_silence)
    app.router.add_get("/v1/silences", list_silences, allow_head=False)
    app.router.add_delete("/v1/silences/{id}", delete_silence)
