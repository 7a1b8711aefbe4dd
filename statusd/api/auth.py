"""Bearer-token check for the platform backend's API (STATUSD_API_TOKEN)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from statusd.api.errors import error_response
from statusd.app_keys import SETTINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COOKIE_NAME = "statusd_token"  # the status page keeps the token in an HttpOnly cookie


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def api_token_ok(request: web.Request, *, allow_cookie: bool = False) -> bool:
    token = request.app[SETTINGS].api_token
    if token is None:
        return False
    presented = bearer(request) or (request.cookies.get(COOKIE_NAME) if allow_cookie else None)
    return presented is not None and hmac.compare_digest(
        presented.encode(), token.get_secret_value().encode()
    )


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
    """Like require_api_token, but the status page's `statusd_token` cookie is accepted too."""
    return _token_required(handler, allow_cookie=True)
