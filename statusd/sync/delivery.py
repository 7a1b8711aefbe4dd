"""What one send to a peer (main API, alert webhook) can end in, and which failures are retried.

Retryability lives on the error (`transient`), so the drain's tenacity policy retries exactly the
failures that may succeed later and never a bug (`retry on Exception` would hide one).

One rule for every peer (`verdict_for`): 2xx delivered; 408 (a timeout), 429 and 5xx transient;
any other status permanent. A destination that can never be reached (not an http(s) URL, no host,
a certificate that does not verify) is permanent too: retrying it forever would only grow the
outbox.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

import aiohttp

from statusd.errors import StatusdError

BODY_KEEP = 4000  # characters of a peer's response body kept on the outbox row


class DeliveryVerdict(StrEnum):
    DELIVERED = "delivered"  # 2xx (or 409 from the main API: it already holds this or newer)
    DEAD = "dead"  # permanent refusal: kept as a dead letter with the response


class SendOutcome(StrEnum):
    """One send as the metrics count it (statusd_sync_sends_total, statusd_alerts_sent_total)."""

    SYNCED = "synced"  # main API: 2xx
    CONFLICT = "conflict"  # main API: 409, it already holds this or newer (counts as synced)
    DELIVERED = "delivered"  # alert webhook: 2xx
    DEAD = "dead"  # permanent refusal
    TRANSIENT = "transient"  # retried (in this run or a later one)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The final answer of a peer for one row (transient failures raise instead)."""

    verdict: DeliveryVerdict
    status: int | None  # None: refused before any HTTP answer (an unusable destination)
    body: str
    error: str | None = None  # why, when there is no HTTP status to say it


class TransientDeliveryError(StatusdError):
    """The peer may accept later: 5xx, 429, a timeout, a refused or reset connection."""

    transient = True

    def __init__(self, message: str, status: int | None = None, body: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def clip(body: str) -> str:
    return body if len(body) <= BODY_KEEP else body[:BODY_KEEP] + "…"


TRANSIENT_4XX = frozenset({408, 429})  # request timeout, rate limited: the peer may accept later

# Network-level failures that no retry heals: the URL itself is unusable, or the peer's
# certificate does not verify. (InvalidURL covers the no-scheme / no-host InvalidUrlClientError.)
PERMANENT_SEND_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.InvalidURL,
    aiohttp.NonHttpUrlClientError,
    aiohttp.ClientConnectorCertificateError,
)


def decoded(body: bytes, charset: str | None) -> str:
    """A response body as text: its declared charset, else UTF-8 (what a JSON answer is).

    Not aiohttp's `text()`, which parses the Content-Type again and guesses a charset per call:
    a tenth of a healthy send's own bookkeeping, for a body kept only to show an operator."""
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")


def verdict_for(
    peer: str, status: int, body: str, *, also_delivered: Collection[int] = ()
) -> Delivery:
    """DELIVERED or DEAD for an HTTP answer; raises TransientDeliveryError when worth retrying.

    `also_delivered`: non-2xx statuses that mean success for this peer (the main API's 409)."""
    if 200 <= status < 300 or status in also_delivered:
        return Delivery(DeliveryVerdict.DELIVERED, status, clip(body))
    if status >= 500 or status in TRANSIENT_4XX:
        raise TransientDeliveryError(f"{peer} answered {status}", status, clip(body))
    return Delivery(DeliveryVerdict.DEAD, status, clip(body))


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    data: bytes,
    headers: dict[str, str],
    client_timeout: aiohttp.ClientTimeout,
) -> tuple[int, str] | Delivery:
    """One HTTP request: (status, body), or a DEAD Delivery when the destination is unusable.

    Any other network-level failure becomes a TransientDeliveryError."""
    try:
        async with session.request(
            method, url, data=data, headers=headers, timeout=client_timeout
        ) as resp:
            return resp.status, decoded(await resp.read(), resp.charset)
    except PERMANENT_SEND_ERRORS as exc:
        reason = f"permanent: {type(exc).__name__}: {exc}".rstrip(": ")
        return Delivery(DeliveryVerdict.DEAD, None, clip(reason), error=reason)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        # Refused, reset, DNS, a timeout: the peer may be fine a moment later.
        raise TransientDeliveryError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
