"""POST /v1/prune: bring every table within its retention policy now (statusd.retention), as
`statusd prune` and the beat task do; `{"dry_run": true}` only counts."""

from __future__ import annotations

import structlog
from aiohttp import web

from statusd.access.audit import AuditAction
from statusd.access.scopes import Scope
from statusd.api import request_checks
from statusd.api.auth import guard
from statusd.api.error_responses import model_response
from statusd.app_keys import RUNTIME
from statusd.availability.outages import persist
from statusd.retention import prune
from statusd.schema import responses
from statusd.schema.bad_input import parse_body
from statusd.schema.bodies import PruneRequest

log = structlog.get_logger("statusd.api")


@guard(Scope.ADMIN, action=AuditAction.PRUNE)
async def post_prune(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = parse_body(
        PruneRequest, await request_checks.read_json_object(request, rt.settings.max_body_bytes)
    )
    if not body.dry_run:
        await persist(rt.redis, rt.keys, rt.engine)
    report = await prune(rt.engine, rt.settings, dry_run=body.dry_run)
    return model_response(responses.PruneResult.model_validate(report.as_json()))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/prune", post_prune)
