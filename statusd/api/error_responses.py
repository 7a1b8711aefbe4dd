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


def created_response(body: BaseModel, location: str) -> web.Response:
    """201 with the new resource, its own URL in `Location`."""
    return model_response(body, 201, headers={"Location": location})


def error_response(status: int, error: str, message: str, **extra: Any) -> web.Response:
    """`{"error": <machine code>, "message": <what to do>, ...}`; `field` names the bad input."""
    headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
    return json_response({"error": error, "message": message, **extra}, status, headers)


def error_body(exc: Exception) -> tuple[int, dict[str, Any]] | None:
    """The status and JSON body an error answers with; None for one that is not ours (a bug).

    Routes that answer many items at once (POST /v1/workloads:batch) put it in an item's result,
    so each item reads exactly as the single route would have answered it."""
    if isinstance(exc, BadInput):
        return exc.status, {"error": exc.error, "message": str(exc)} | (
            {"field": exc.field} if exc.field else {}
        )
    if isinstance(exc, UnknownWorkload):
        return 404, {"error": "not_found", "message": str(exc)}
    if isinstance(exc, WorkloadExists):
        return 409, {"error": "conflict", "message": str(exc)}
    if isinstance(exc, TransitionRefused):
        return 409, {"error": "transition_refused", "message": str(exc), "rule": exc.rule}
    if isinstance(exc, UnsafeStatusURL):
        return 422, {"error": "unsafe_status_url", "message": str(exc), "field": "status_url"}
    if isinstance(exc, StorageUnavailable):
        return 503, {
            "error": "database_unavailable",
            "message": "the database is not reachable; retry shortly",
        }
    if isinstance(exc, (RedisUnavailable, RedisError, RedisConnectionError, RedisTimeoutError)):
        return 503, {
            "error": "redis_unavailable",
            "message": "Redis is not reachable; retry shortly",
        }
    return None


def _map(exc: Exception) -> web.Response:
    mapped = error_body(exc)
    if mapped is None:
        raise exc
    status, body = mapped
    return error_response(status, body.pop("error"), body.pop("message"), **body)


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
