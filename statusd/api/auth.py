"""Who may call: the API token (Bearer), or the status page's session cookie.

The cookie holds a signed session id (statusd.api.sessions), never the token. `session_middleware`
resolves it once per request (signature and expiry without I/O, then one Redis EXISTS), so the
checks below stay synchronous and cost nothing on requests that carry no cookie (heartbeats).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from statusd.api import sessions
from statusd.api.errors import error_response
from statusd.app_keys import RUNTIME, SETTINGS

log = structlog.get_logger("statusd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COOKIE_NAME = "statusd_session"  # HttpOnly, SameSite=Strict; holds a signed session id
LEGACY_COOKIE_NAME = "statusd_token"  # held the raw API token before sessions: never read again
SESSION = web.RequestKey("statusd_session", sessions.SessionCookie)  # set only when valid


async def _open_session(request: web.Request, raw: str) -> sessions.SessionCookie | None:
    rt = request.app[RUNTIME]
    cookie = sessions.decode(rt.settings.secret_bytes, raw, time.time())
    if cookie is None:
        return None
    try:
        return cookie if await sessions.is_open(rt.redis, rt.keys, cookie.session_id) else None
    except RedisError as exc:
        # Fail closed, and only for the cookie: bearer-token and public routes keep working.
        log.warning("session.check_failed", error=f"{type(exc).__name__}: {exc}")
        return None


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the request's session (request[SESSION]) when its cookie is valid and not revoked."""
    raw = request.cookies.get(COOKIE_NAME) if "Cookie" in request.headers else None
    if raw:
        cookie = await _open_session(request, raw)
        if cookie is not None:
            request[SESSION] = cookie
    return await handler(request)


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def token_matches(request: web.Request, presented: str) -> bool:
    """Constant-time comparison with STATUSD_API_TOKEN (False when none is configured)."""
    token = request.app[SETTINGS].api_token
    return token is not None and hmac.compare_digest(
        presented.encode(), token.get_secret_value().encode()
    )


def api_token_ok(request: web.Request, *, allow_cookie: bool = False) -> bool:
    """The Bearer API token, or (allow_cookie) a live status-page session cookie."""
    presented = bearer(request)
    if presented is not None and token_matches(request, presented):
        return True
    return allow_cookie and SESSION in request


def _token_required(handler: Handler, *, allow_cookie: bool) -> Handler:
    async def checked(request: web.Request) -> web.StreamResponse:
        if not api_token_ok(request, allow_cookie=allow_cookie):
            return error_response(
                401,
                "unauthorized",
                "missing or wrong API token: send Authorization: Bearer <STATUSD_API_TOKEN>",
            )
        return await handler(request)

    checked.__name__ = handler.__name__
    checked.__doc__ = handler.__doc__
    return checked


def require_api_token(handler: Handler) -> Handler:
    """Decorate a handler: 401 JSON unless `Authorization: Bearer <STATUSD_API_TOKEN>`."""
    return _token_required(handler, allow_cookie=False)


def require_api_token_or_cookie(handler: Handler) -> Handler:
    """Like require_api_token, but the status page's session cookie is accepted too."""
    return _token_required(handler, allow_cookie=True)
