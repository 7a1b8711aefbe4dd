"""Key routes (admin): POST /v1/keys (the key, once), GET /v1/keys (never a secret),
DELETE /v1/keys/{id} (revoked in every process within STATUSD_KEY_CACHE_TTL)."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from aiohttp import web

from statusd.access import api_keys
from statusd.access.audit import AuditAction
from statusd.access.scopes import Scope
from statusd.api import request_checks
from statusd.api.auth import KEY_CACHE, guard
from statusd.api.error_responses import created_response, model_response
from statusd.app_keys import RUNTIME
from statusd.errors import BadInput
from statusd.schema.access import KeyCreated, KeyPage, KeyPublic, KeyRequest
from statusd.schema.bad_input import parse_body

log = structlog.get_logger("statusd.api")


@guard(Scope.ADMIN, action=AuditAction.KEY_CREATE)
async def create_key(request: web.Request) -> web.Response:
    """POST /v1/keys -> 201 {id, key, name, scope, labels, expires_at}; the key is shown once."""
    rt = request.app[RUNTIME]
    body = await request_checks.read_json_object(request, rt.settings.max_body_bytes)
    wanted = parse_body(KeyRequest, body)
    expires_in = api_keys.parse_duration(wanted.expires_in) if wanted.expires_in else None
    created = await api_keys.create_key(
        rt.engine,
        name=wanted.name,
        scope=wanted.scope,
        labels=dict(wanted.labels or {}),
        expires_in=expires_in,
        now=datetime.now(UTC),
    )
    record = created.record
    log.info("key.created", key_id=record.id, name=record.name, scope=record.scope.value)
    shown = KeyCreated(
        id=record.id,
        key=created.key,
        name=record.name,
        scope=record.scope,
        labels=record.labels,
        expires_at=record.expires_at.isoformat() if record.expires_at else None,
    )
    return created_response(shown, f"/v1/keys/{record.id}")


@guard(Scope.ADMIN)
async def list_keys(request: web.Request) -> web.Response:
    """GET /v1/keys: every key (revoked and expired too), without secrets."""
    records = await api_keys.list_keys(request.app[RUNTIME].engine)
    items = [KeyPublic.model_validate(r.as_json()) for r in records]
    return model_response(KeyPage(items=items, count=len(items)))


@guard(Scope.ADMIN, action=AuditAction.KEY_REVOKE)
async def revoke_key(request: web.Request) -> web.Response:
    """DELETE /v1/keys/{id}: the key stops working everywhere (idempotent)."""
    key_id = request.match_info["id"]
    record = None
    if api_keys.is_key_id(key_id):
        record = await api_keys.revoke_key(request.app[RUNTIME].engine, key_id, datetime.now(UTC))
    if record is None:
        raise BadInput(f"no key {key_id[:40]!r}", field="id", status=404, error="not_found")
    request.app[KEY_CACHE].forget(key_id)
    log.info("key.revoked", key_id=key_id, name=record.name)
    return model_response(KeyPublic.model_validate(record.as_json()))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/keys", create_key)
    app.router.add_get("/v1/keys", list_keys, allow_head=False)
    app.router.add_delete("/v1/keys/{id}", revoke_key)
