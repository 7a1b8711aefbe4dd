"""Status-page sign-in and sign-out: the API token buys a server-side session, never a copy of it.

POST /login (form field `token`: STATUSD_API_TOKEN or any API key) checks it, opens a session in
Redis for that key (the page then acts with the key's scope and labels) and sets the HttpOnly,
SameSite=Strict `statusd_session` cookie (signed id + expiry, statusd.api.sessions), `Secure`
when the request came over HTTPS (directly or via a trusted proxy). POST /logout revokes the
session server-side, so a stolen copy of the cookie stops working too.
"""

from __future__ import annotations

import time

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from statusd.access.audit import AuditAction
from statusd.api import sessions
from statusd.api.auth import (
    COOKIE_NAME,
    LEGACY_COOKIE_NAME,
    PRINCIPAL,
    SESSION,
    SESSION_PRINCIPAL,
    audited,
    principal_for_key,
)
from statusd.api.proxies import came_over_https
from statusd.app_keys import RUNTIME
from statusd.errors import BadInput
from statusd.oncall.page import SECURITY_HEADERS, login_form

log = structlog.get_logger("statusd.oncall")


async def form_token(request: web.Request) -> str | None:
    """The form's `token` field (url-encoded or multipart); 400 naming the body if unparseable."""
    try:
        form = await request.post()
    except (ValueError, HttpProcessingError) as exc:  # "boundary missed", bad part headers...
        raise BadInput(
            f"form body cannot be parsed: {exc}", field="body", status=400, error="malformed_form"
        ) from None
    token = form.get("token")
    return token if isinstance(token, str) else None


@audited(AuditAction.LOGIN)
async def login(request: web.Request) -> web.Response:
    """POST /login (form field `token`): opens a session and redirects to /, or 401 with the form."""
    presented = await form_token(request)
    principal = await principal_for_key(request, presented) if presented else None
    if principal is None:
        return web.Response(
            text=login_form("That token is not valid."),
            status=401,
            content_type="text/html",
            headers=SECURITY_HEADERS,
        )
    request[PRINCIPAL] = principal  # the audit row's actor
    rt = request.app[RUNTIME]
    ttl = rt.settings.session_ttl
    cookie = await sessions.open_session(rt.redis, rt.keys, principal.key_id, ttl, time.time())
    log.info("session.opened", remote=request.remote, key_id=principal.key_id)
    response = web.HTTPSeeOther("/")
    response.set_cookie(
        COOKIE_NAME,
        sessions.encode(rt.settings.secret_bytes, cookie),
        httponly=True,
        samesite="Strict",
        secure=came_over_https(request, rt.settings.trusted_proxy_networks),
        max_age=int(ttl),
        path="/",
    )
    response.del_cookie(LEGACY_COOKIE_NAME, path="/")  # a raw-token cookie from before sessions
    raise response


@audited(AuditAction.LOGOUT)
async def logout(request: web.Request) -> web.Response:
    """POST /logout: revoke the session server-side and forget the cookie."""
    if SESSION in request:
        if SESSION_PRINCIPAL in request:
            request[PRINCIPAL] = request[SESSION_PRINCIPAL]
        rt = request.app[RUNTIME]
        await sessions.close_session(rt.redis, rt.keys, request[SESSION].session_id)
        log.info("session.closed", remote=request.remote)
    response = web.HTTPSeeOther("/")
    response.del_cookie(COOKIE_NAME, path="/")
    response.del_cookie(LEGACY_COOKIE_NAME, path="/")
    raise response


def add_routes(app: web.Application) -> None:
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
