"""Errors as HTTP, mapped once: every failure is JSON naming the problem, never a bare 500."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import ClientConnectionResetError, web
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from statusd.api.deadlines import BodyTimeout
from statusd.errors import (
    BadInput,
    RedisUnavailable,
    StatusdError,
    StorageUnavailable,
    TransitionRefused,
    UnknownWorkload,
    UnsafeStatusURL,
    WorkloadExists,
)

log = structlog.get_logger("statusd.api")
RETRY_AFTER_S = "2"


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def model_response(
    body: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A response model (statusd.schema.responses) as the JSON answer."""
    return web.Response(
        body=body.model_dump_json(), status=status, content_type="application/json", headers=headers
    )


def error_response(status: int, error: str, message: str, **extra: Any) -> web.Response:
    """`{"error": <machine code>, "message": <what to do>, ...}`; `field` names the bad input."""
    headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
    return json_response({"error": error, "message": message, **extra}, status, headers)


def _map(exc: Exception) -> web.Response:
    if isinstance(exc, BadInput):
        extra = {"field": exc.field} if exc.field else {}
        return error_response(exc.status, exc.error, str(exc), **extra)
    if isinstance(exc, UnknownWorkload):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, WorkloadExists):
        return error_response(409, "conflict", str(exc))
    if isinstance(exc, TransitionRefused):
        return error_response(409, "transition_refused", str(exc), rule=exc.rule)
    if isinstance(exc, UnsafeStatusURL):
        return error_response(422, "unsafe_status_url", str(exc), field="status_url")
    if isinstance(exc, StorageUnavailable):
        return error_response(
            503, "database_unavailable", "the database is not reachable; retry shortly"
        )
    if isinstance(exc, (RedisUnavailable, RedisError, RedisConnectionError, RedisTimeoutError)):
        return error_response(503, "redis_unavailable", "Redis is not reachable; retry shortly")
    raise exc


def _client_gone(request: web.Request, exc: Exception) -> web.Response:
    """The client hung up mid-request: routine on a fleet (crashes, restarts), so DEBUG, no trace.

    Nobody reads the answer; it only lets aiohttp finish the request quietly."""
    log.debug(
        "request.client_gone",
        path=request.path,
        method=request.method,
        error=f"{type(exc).__name__}: {exc}",
    )
    return error_response(400, "client_gone", "the client closed the connection mid-request")


def _unhandled(request: web.Request) -> web.Response:
    """A bug: logged with its traceback (call inside `except`), answered 500 JSON."""
    log.exception("api.unhandled", path=request.path, method=request.method)
    return error_response(500, "internal", "internal error; it has been logged")


def _body_timeout(exc: BodyTimeout) -> web.Response:
    response = error_response(408, "body_timeout", str(exc), field="body")
    response.force_close()  # the rest of the body may still trickle in: do not wait for it
    return response


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one error boundary: every failure leaves as JSON naming the problem."""
    try:
        return await handler(request)
    except BodyTimeout as exc:
        return _body_timeout(exc)
    except (ConnectionResetError, ClientConnectionResetError) as exc:
        if request.transport is not None and not request.transport.is_closing():
            return _unhandled(request)  # the client is still there: a reset on our side, a bug
        return _client_gone(request, exc)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return error_response(
                exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason
            )
        raise
    except (StatusdError, RedisError) as exc:
        return _map(exc)
    except Exception:
        return _unhandled(request)
