"""What the blocking and the asyncio client share about the wire: answers decoded by content
type, a connection failure as `Unavailable`, the event stream's timeouts."""

from __future__ import annotations

import json
from typing import Any

import httpx

from statusd_client.api.calls import Call
from statusd_client.api.errors import StatusdApiError, Unavailable
from statusd_client.api.models import Registration, RegistrationResult

USER_AGENT = "statusd-client-python-api/0.1"
# Registrations per `POST /v1/workloads:batch` (statusd's STATUSD_MAX_BATCH_ITEMS default).
BATCH_SIZE = 1000


def decode(content_type: str, content: bytes) -> Any:
    """JSON answers as Python values; anything else (text/csv) as text; no body as None."""
    if not content:
        return None
    if content_type.split(";")[0].strip().lower() == "application/json":
        return json.loads(content)
    return content.decode("utf-8", errors="replace")


def partial_answer(call: Call[Any], status: int, body: Any) -> bool:
    """A 503 that still answers item by item (Call.partial_on_503)."""
    return call.partial_on_503 and status == 503 and isinstance(body, dict) and "results" in body


def transport_failure(call: Call[Any], exc: httpx.TransportError) -> Unavailable:
    """No answer: statusd refused the connection, or it dropped, or it timed out."""
    return Unavailable(
        f"{call.route.method} {call.path}: no answer from statusd ({type(exc).__name__}: {exc})"
    )


def one_by_one(item: Registration, exc: StatusdApiError) -> RegistrationResult:
    """A refused single registration as the batch route would report its item."""
    return RegistrationResult(item.id, exc.status, error=exc)


def watch_timeout(connect: float | None, read: float) -> httpx.Timeout:
    """An event stream waits for events, not for a whole answer: the read timeout must outlast
    statusd's keep-alive pings (STATUSD_EVENTS_PING_INTERVAL, 15 s by default); when it runs
    out, the connection is taken for dead and the watch reconnects."""
    return httpx.Timeout(connect=connect, read=read, write=connect, pool=connect)
