"""Status API routes and middlewares: workloads, transitions, health, OpenAPI, keys, audit."""

from __future__ import annotations

from aiohttp import web

from statusd.api import (
    audit_routes,
    health,
    key_routes,
    maintenance_routes,
    openapi,
    prune_route,
    silence_routes,
    workloads,
)
from statusd.api.audit_trail import audit_middleware
from statusd.api.auth import key_cache_ctx, session_middleware
from statusd.api.deadlines import body_deadline_middleware
from statusd.api.error_responses import error_middleware


def setup_api(app: web.Application) -> None:
    """Register middlewares and routes of the status API.

    The audit middleware wraps everything: a route declared with an audit action
    (statusd.api.auth.guard) gets one audit row per call, whatever it answered.
    The error middleware goes on the whole app (ingest and on-call routes too): every failure
    anywhere in statusd's HTTP surface is JSON naming the problem, never a bare 500 page.
    """

    app.cleanup_ctx.append(key_cache_ctx)
    app.middlewares.append(audit_middleware)  # outermost: sees the final status of every answer
    app.middlewares.append(error_middleware)
    app.middlewares.append(body_deadline_middleware)  # inside the boundary: 408 is JSON too
    app.middlewares.append(session_middleware)
    health.add_routes(app)
    openapi.add_routes(app)
    workloads.add_routes(app)
    silence_routes.add_routes(app)
    maintenance_routes.add_routes(app)
    key_routes.add_routes(app)
    audit_routes.add_routes(app)
    prune_route.add_routes(app)
