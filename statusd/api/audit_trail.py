"""The audit middleware: one row per call to a route declared with an audit action.

Routes declare their action once (statusd.api.auth.guard / audited); this middleware, the
outermost, writes the row after the answer is known, refusals (401, 403, 404, 422...) included.
Reads are never audited. The actor is the principal the guard resolved (a key, the bootstrap
token, or the session's key); a call that proved no identity is `anonymous`. The target is the
path's `{id}`, else what the handler named (request[AUDIT_TARGET]), else the id in the Location
header of a 201.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from aiohttp import web

from statusd.access import audit
from statusd.access.scopes import ANONYMOUS_ID, Principal, Scope
from statusd.api.auth import AUDIT_TARGET, PRINCIPAL, READ_METHODS, Handler, access_of
from statusd.api.proxies import client_address
from statusd.app_keys import RUNTIME

log = structlog.get_logger("statusd.audit")
ANONYMOUS = Principal(ANONYMOUS_ID, ANONYMOUS_ID, Scope.READ)


def _target(request: web.Request, response: web.StreamResponse | None) -> str | None:
    in_path = request.match_info.get("id")
    if in_path:
        return in_path
    named: str | None = request.get(AUDIT_TARGET)
    if named:
        return named
    location = response.headers.get("Location") if response is not None else None
    return location.rsplit("/", 1)[-1] if location else None


async def _write(
    request: web.Request, action: str, status: int, response: web.StreamResponse | None
) -> None:
    rt = request.app[RUNTIME]
    entry = audit.AuditRecord.of(
        request.get(PRINCIPAL, ANONYMOUS),
        action,
        at=datetime.now(UTC),
        target=_target(request, response),
        outcome=status,
        client_address=client_address(request, rt.settings.trusted_proxy_networks),
    )
    try:
        await audit.record(rt.engine, entry)
    except Exception as exc:  # the call itself is done: say loudly that its row is missing
        log.error(
            "audit.write_failed",
            action=entry.action,
            actor=entry.actor_id,
            target=entry.target,
            outcome=entry.outcome,
            error=f"{type(exc).__name__}: {exc}",
        )


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Audit every call to a route declared with an action (non-read methods only)."""
    if request.method in READ_METHODS:
        return await handler(request)
    access = access_of(request.match_info.handler)
    if access is None:
        return await handler(request)  # heartbeats, public routes
    resource = request.match_info.route.resource
    action = access.action or (
        f"{request.method} {resource.canonical if resource is not None else request.path}"
    )
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects (sign-in) and aiohttp's own refusals
        await _write(request, action, exc.status, exc)
        raise
    except Exception:
        await _write(request, action, 500, None)
        raise
    await _write(request, action, response.status, response)
    return response
