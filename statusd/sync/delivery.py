"""What one send to a peer (main API, alert webhook) can end in, and which failures are retried.

Retryability lives on the error (`transient`), so the drain's tenacity policy retries exactly the
failures that may succeed later and never a bug (`retry on Exception` would hide one).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from statusd.errors import StatusdError

BODY_KEEP = 4000  # characters of a peer's response body kept on the outbox row


class Verdict(StrEnum):
    DELIVERED = "delivered"  # 2xx (or 409 from the main API: it already holds this or newer)
    DEAD = "dead"  # permanent refusal: kept as a dead letter with the response


@dataclass(frozen=True, slots=True)
class Delivery:
    """The final answer of a peer for one row (transient failures raise instead)."""

    verdict: Verdict
    status: int
    body: str


class TransientDeliveryError(StatusdError):
    """The peer may accept later: 5xx, 429, a timeout, a refused or reset connection."""

    transient = True

    def __init__(self, message: str, status: int | None = None, body: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def clip(body: str) -> str:
    return body if len(body) <= BODY_KEEP else body[:BODY_KEEP] + "…"
