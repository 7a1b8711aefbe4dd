"""GET /v1/audit (admin): the audit trail, oldest first, filtered, keyset-paged. Read-only: no
route changes or deletes audit rows."""

from __future__ import annotations

from aiohttp import web

from statusd.access import audit
from statusd.access.scopes import Scope
from statusd.api.auth import guard
from statusd.api.error_responses import model_response
from statusd.app_keys import RUNTIME
from statusd.schema.access import AuditEntry, AuditPage, AuditQuery
from statusd.schema.bad_input import parse_query


def audit_filter(query: AuditQuery) -> audit.AuditFilter:
    return audit.AuditFilter(
        actor=query.actor or None,
        action=query.action or None,
        target=query.target or None,
        since=query.since,
        after_id=audit.decode_cursor(query.cursor) if query.cursor else 0,
    )


@guard(Scope.ADMIN)
async def get_audit(request: web.Request) -> web.Response:
    """GET /v1/audit?actor=&action=&target=&since=&cursor=&limit="""
    query = parse_query(AuditQuery, request.query)
    rows, next_cursor = await audit.page(
        request.app[RUNTIME].engine, audit_filter(query), query.limit
    )
    items = [AuditEntry.model_validate(r) for r in rows]
    return model_response(AuditPage(items=items, next_cursor=next_cursor))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/audit", get_audit, allow_head=False)
