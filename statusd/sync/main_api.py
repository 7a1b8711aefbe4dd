"""Client for the platform's main API: one transition -> `PUT /workloads/{id}/status`.

Contract (README, "Main-DB sync"): 2xx synced; 409 the main DB already holds this or a newer
transition, also synced; everything else as statusd.sync.delivery.verdict_for says (408, 429,
5xx, timeouts and connection errors transient; other 4xx and an unusable URL permanent). The
Idempotency-Key is the transition id, so a re-send after a lost answer (timeout, reset, a worker
killed mid-request) is harmless.
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from statusd.sync.delivery import Delivery, send, verdict_for


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

    async def put_status(self, workload_id: str, transition_id: int, body: bytes) -> Delivery:
        """PUT one transition (`body`: its JSON payload). Returns DELIVERED/DEAD; raises
        TransientDeliveryError to retry."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": str(transition_id)}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        answer = await send(
            self.session,
            "PUT",
            self.url_for(workload_id),
            body,
            headers,
            self.timeout,
        )
        if isinstance(answer, Delivery):
            return answer
        return verdict_for("main API", *answer, also_delivered=(409,))
