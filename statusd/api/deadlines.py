"""Read deadlines of our own: a client gets so long to send its headers, then its body.

Without them a slowloris client (a byte every few seconds) holds a connection, and the handler
waiting on its body, for as long as it likes. Headers: aiohttp's keep-alive timer is armed when a
connection opens and after each response, and closes the connection if no complete request head
has arrived when it fires, so STATUSD_HEADER_TIMEOUT is passed as that timer (it is therefore
also the idle keep-alive limit). Body: a per-request timer that fails the body stream if it is
not complete STATUSD_BODY_TIMEOUT seconds after the headers; the handler's read raises
BodyTimeout, which the error boundary answers 408 and closes the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader

from statusd.app_keys import SETTINGS
from statusd.errors import StatusdError
from statusd.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyTimeout(StatusdError, TimeoutError):
    """The request body did not arrive within STATUSD_BODY_TIMEOUT (answered 408)."""


def server_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiohttp's server (web.run_app, AppRunner, TestServer)."""
    return {"keepalive_timeout": settings.header_timeout}


def _expire(content: StreamReader, seconds: float) -> None:
    if not content.is_eof():
        content.set_exception(
            BodyTimeout(
                f"the request body did not arrive within {seconds:g}s (STATUSD_BODY_TIMEOUT)"
            )
        )


@web.middleware
async def body_deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Fail the body stream of a request whose body is still incomplete after the deadline."""
    if not request.body_exists or request.content.is_eof():
        return await handler(request)  # nothing left to wait for (GETs, bodies already buffered)
    seconds = request.app[SETTINGS].body_timeout
    timer = asyncio.get_running_loop().call_later(seconds, _expire, request.content, seconds)
    try:
        return await handler(request)
    finally:
        timer.cancel()
