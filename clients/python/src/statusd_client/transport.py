"""One heartbeat over HTTP (urllib, blocking) and what its answer means for the sender.

The three outcomes are the whole retry policy's input:
- `Accepted`: stored; send again after `next_heartbeat_s` if statusd said so, else the interval;
- `Transient`: 503/5xx, 429 or a network error: nothing was stored, retry with backoff, never
  earlier than `Retry-After`;
- `Refused`: any other 4xx (bad token, bad body, unknown state): retrying the same report cannot
  help, so it is not retried.
"""

from __future__ import annotations

import email.utils
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from typing import Union

HEARTBEATS_PATH = "/v1/heartbeats"
USER_AGENT = "statusd-client-python/0.1"
MAX_DETAIL_CHARS = 1000  # statusd allows 1 KiB of detail; stay under it whatever the encoding
_MAX_ANSWER_BYTES = 16 * 1024
# 408 and 429 are 4xx that mean "later", not "wrong": they are retried like a 503.
_RETRYABLE_4XX = frozenset({408, 429})


@dataclass(frozen=True)
class Report:
    """What the workload wants statusd to know: a state of its kind and an optional detail;
    `quiet_for_s` announces that it will be silent that long (statusd does not judge it stale
    before then)."""

    status: str
    detail: str | None = None
    quiet_for_s: int | None = None


@dataclass(frozen=True)
class Accepted:
    next_heartbeat_s: float | None
    # A fresh token, sent when ours was signed with a secret statusd is rotating out: use it.
    heartbeat_token: str | None = None


@dataclass(frozen=True)
class Transient:
    reason: str
    retry_after_s: float | None


@dataclass(frozen=True)
class Refused:
    code: int
    error: str
    message: str


Outcome = Union[Accepted, Transient, Refused]


def heartbeat_body(workload_id: str, report: Report, seq: int) -> bytes:
    body: dict[str, object] = {"workload_id": workload_id, "status": report.status, "seq": seq}
    if report.detail:
        body["detail"] = report.detail[:MAX_DETAIL_CHARS]
    if report.quiet_for_s:
        body["quiet_for_s"] = report.quiet_for_s
    return json.dumps(body).encode()


def send_heartbeat(url: str, token: str, body: bytes, timeout: float) -> Outcome:
    """POST one heartbeat; never raises for anything the network or statusd can do."""
    request = urllib.request.Request(
        url.rstrip("/") + HEARTBEATS_PATH,
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = _read_json(response.read(_MAX_ANSWER_BYTES))
            renewed = answer.get("heartbeat_token")
            return Accepted(
                next_heartbeat_s=_positive_float(answer.get("next_heartbeat_s")),
                heartbeat_token=renewed if isinstance(renewed, str) and renewed else None,
            )
    except urllib.error.HTTPError as exc:
        return _classify_error(exc)
    except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
        # refused, reset, DNS, timeout (socket.timeout is an OSError), a garbled answer
        reason = getattr(exc, "reason", exc)
        return Transient(reason=f"{type(exc).__name__}: {reason}", retry_after_s=None)


def _classify_error(exc: urllib.error.HTTPError) -> Outcome:
    try:
        answer = _read_json(exc.read(_MAX_ANSWER_BYTES))
    except (OSError, HTTPException, socket.timeout):
        answer = {}
    finally:
        exc.close()
    error = str(answer.get("error") or exc.reason or "")
    message = str(answer.get("message") or "")
    if exc.code >= 500 or exc.code in _RETRYABLE_4XX:
        return Transient(
            reason=f"HTTP {exc.code} {error}".strip(),
            retry_after_s=parse_retry_after(exc.headers.get("Retry-After")),
        )
    return Refused(code=exc.code, error=error, message=message)


def _read_json(raw: bytes) -> dict[str, object]:
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _positive_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return float(value)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())
