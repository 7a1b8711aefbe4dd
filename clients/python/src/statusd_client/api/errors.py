"""One exception per error statusd answers, mapped from the JSON error body once (`from_answer`).

Every statusd error is `{"error": <code>, "message": <words>, "field"?, "rule"?}`; the HTTP status
and the code pick the class, so callers catch what they mean (`except NotFound:`), not numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class StatusdApiError(Exception):
    """An answer statusd gave that is not a success (or no answer at all: `Unavailable`)."""

    def __init__(self, message: str, *, status: int = 0, error: str = "", body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status  # the HTTP status; 0 when no answer arrived
        self.error = error  # statusd's machine-readable code (`not_found`, `conflict`, ...)
        self.body = body


class BadInput(StatusdApiError):
    """400, 413 or 422: statusd refused the input; `field` names the part at fault."""

    def __init__(self, message: str, *, field: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.field = field


class Unauthorized(StatusdApiError):
    """401: the API key is missing, wrong, revoked or expired."""


class Forbidden(StatusdApiError):
    """403: the key is valid but its scope does not allow this call."""


class NotFound(StatusdApiError):
    """404: no such workload (or silence), or one the key may not see."""


class AlreadyRegistered(StatusdApiError):
    """409 `conflict`: the id is registered (deregister it first to start a new generation)."""


class TransitionRefused(StatusdApiError):
    """409 `transition_refused`: the lifecycle said no; `rule` says which rule (it is recorded)."""

    def __init__(self, message: str, *, rule: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.rule = rule


class Unavailable(StatusdApiError):
    """503, or statusd could not be reached: try again after `retry_after` seconds (when known).

    Reads are retried by the client itself first; a write is never repeated on its own."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(StatusdApiError):
    """Any other answer (a 500 is a statusd bug: its log has the traceback)."""


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (statusd sends delta-seconds); None when absent or odd."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


def from_answer(status: int, body: Any, headers: Mapping[str, str]) -> StatusdApiError:
    """The exception for a non-2xx answer (`body`: the decoded JSON, or None)."""
    doc: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    error = str(doc.get("error", ""))
    message = str(doc.get("message") or f"HTTP {status}")
    common: dict[str, Any] = {"status": status, "error": error, "body": body}
    if status in (400, 413, 422):
        field = doc.get("field")
        return BadInput(message, field=None if field is None else str(field), **common)
    if status == 401:
        return Unauthorized(message, **common)
    if status == 403:
        return Forbidden(message, **common)
    if status == 404:
        return NotFound(message, **common)
    if status == 409 and error == "transition_refused":
        rule = doc.get("rule")
        return TransitionRefused(message, rule=None if rule is None else str(rule), **common)
    if status == 409:
        return AlreadyRegistered(message, **common)
    if status == 503:
        wait = retry_after_seconds(headers.get("Retry-After"))
        return Unavailable(message, retry_after=wait, **common)
    return ServerError(message, **common)
