"""Client for the platform's main API: one transition -> `PUT /workloads/{id}/status`.

Contract (README, "Main-DB sync"): 2xx synced; 409 the main DB already holds this or a newer
transition, also synced; other 4xx permanent (dead letter, response kept); 5xx, 429, timeouts and
connection errors transient (retried). The Idempotency-Key is the transition id, so a re-send after
a lost answer (timeout, reset, a worker killed mid-request) is harmless.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from statusd.sync.delivery import Delivery, TransientDeliveryError, Verdict, clip


class MainApiClient:
    """Sends outbox payloads to the main API over a session the caller owns (and closes)."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, token: str | None, timeout: float
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    def url_for(self, workload_id: str) -> str:
        return f"{self.base_url}/workloads/{quote(workload_id, safe='')}/status"

    async def put_status(self, workload_id: str, payload: dict[str, Any]) -> Delivery:
        """PUT one transition. Returns DELIVERED/DEAD; raises TransientDeliveryError to retry."""
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": str(payload["transition_id"]),
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        status, body = await send(
            self.session,
            "PUT",
            self.url_for(workload_id),
            orjson.dumps(payload),
            headers,
            self.timeout,
        )
        if 200 <= status < 300 or status == 409:
            return Delivery(Verdict.DELIVERED, status, clip(body))
        if status == 429 or status >= 500:
            raise TransientDeliveryError(f"main API answered {status}", status, clip(body))
        return Delivery(Verdict.DEAD, status, clip(body))


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    data: bytes,
    headers: dict[str, str],
    client_timeout: aiohttp.ClientTimeout,
) -> tuple[int, str]:
    """One HTTP request; any network-level failure becomes a TransientDeliveryError."""
    try:
        async with session.request(
            method, url, data=data, headers=headers, timeout=client_timeout
        ) as resp:
            return resp.status, await resp.text(errors="replace")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        # Refused, reset, DNS, a timeout: the peer may be fine a moment later.
        raise TransientDeliveryError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
