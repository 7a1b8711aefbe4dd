"""Maintenance routes: POST/GET /v1/maintenances, GET/DELETE /v1/maintenances/{id} (write / read
keys).

A window's matcher is the silences' and can reach any team's workloads, so keys limited by labels
are refused here, as for silences. The body is checked completely before anything is written;
each problem is a 422 naming its field (`schedule`, `duration_s`, `timezone`, `start`, `end`,
`match.*`, `reason`).
"""

from __future__ import annotations

from datetime import UTC

import structlog
from aiohttp import web

from statusd import maintenance
from statusd.access.audit import AuditAction
from statusd.access.scopes import Scope
from statusd.api import request_checks
from statusd.api.auth import guard
from statusd.api.error_responses import created_response, model_response
from statusd.app_keys import RUNTIME
from statusd.errors import BadInput
from statusd.models import utcnow
from statusd.schema import responses
from statusd.schema.bad_input import parse_body
from statusd.schema.bodies import MaintenanceRequest
from statusd.schema.rules import MAX_SILENCE_ID
from statusd.silences import Matcher

log = structlog.get_logger("statusd.api")


def _not_found(maintenance_id: str) -> BadInput:
    return BadInput(
        f"no maintenance window {maintenance_id[:40]!r}", field="id", status=404, error="not_found"
    )


@guard(Scope.WRITE, action=AuditAction.MAINTENANCE_CREATE, fleet_wide=True)
async def create_maintenance(request: web.Request) -> web.Response:
    """POST /v1/maintenances -> 201 with the window and its id."""
    rt = request.app[RUNTIME]
    body = await request_checks.read_json_object(request, rt.settings.max_body_bytes)
    now = utcnow()
    req = parse_body(MaintenanceRequest, body, now=now)
    matcher = Matcher(kind=req.match.kind, label=req.match.label_pair, workload_id=req.match.id)
    recurrence = (
        maintenance.Recurrence(req.schedule, req.duration_s or 0, req.timezone or "UTC")
        if req.schedule is not None
        else None
    )
    record = await maintenance.create(
        rt.engine,
        matcher,
        req.reason,
        starts_at=req.start.astimezone(UTC) if req.start else None,
        ends_at=req.end.astimezone(UTC) if req.end else None,
        recurrence=recurrence,
        created_at=now,
    )
    log.info("maintenance.created", maintenance_id=record.id, match=matcher.as_json())
    window = responses.Maintenance.model_validate(record.as_json(now))
    return created_response(window, f"/v1/maintenances/{record.id}")


@guard(Scope.READ, fleet_wide=True)
async def list_maintenances(request: web.Request) -> web.Response:
    """GET /v1/maintenances: every window, newest first."""
    rt = request.app[RUNTIME]
    now = utcnow()
    items = await maintenance.list_all(rt.engine)
    page = [responses.Maintenance.model_validate(m.as_json(now)) for m in items]
    return model_response(responses.MaintenancePage(items=page, count=len(page)))


@guard(Scope.READ, fleet_wide=True)
async def get_maintenance(request: web.Request) -> web.Response:
    """GET /v1/maintenances/{id}."""
    maintenance_id = request.match_info["id"]
    rt = request.app[RUNTIME]
    record = (
        await maintenance.get(rt.engine, maintenance_id)
        if len(maintenance_id) <= MAX_SILENCE_ID
        else None
    )
    if record is None:
        raise _not_found(maintenance_id)
    return model_response(responses.Maintenance.model_validate(record.as_json(utcnow())))


@guard(Scope.WRITE, action=AuditAction.MAINTENANCE_DELETE, fleet_wide=True)
async def delete_maintenance(request: web.Request) -> web.Response:
    """DELETE /v1/maintenances/{id}: the window is gone; an occurrence in force ends now."""
    maintenance_id = request.match_info["id"]
    rt = request.app[RUNTIME]
    if len(maintenance_id) > MAX_SILENCE_ID or not await maintenance.remove(
        rt.engine, maintenance_id
    ):
        raise _not_found(maintenance_id)
    log.info("maintenance.deleted", maintenance_id=maintenance_id)
    return model_response(responses.Deleted(id=maintenance_id))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/maintenances", create_maintenance)
    app.router.add_get("/v1/maintenances", list_maintenances, allow_head=False)
    app.router.add_get("/v1/maintenances/{id}", get_maintenance, allow_head=False)
    app.router.add_delete("/v1/maintenances/{id}", delete_maintenance)
