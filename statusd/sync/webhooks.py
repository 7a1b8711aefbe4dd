"""Alert webhooks: POST the outbox row's payload (Slack-compatible `text` + fields) to its URL.

statusd.sync.delivery.verdict_for decides: 2xx delivered; 408, 429, 5xx and network failures
transient (retried by the drain); any other 4xx, and a URL that can never work, permanent (dead
letter: a wrong URL or a revoked hook will not heal by itself).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from statusd.sync.delivery import Delivery, send, verdict_for


class WebhookClient:
    """Delivers alert payloads over a session the caller owns."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def post_alert(self, url: str, payload: dict[str, Any]) -> Delivery:
        """POST one alert. Returns DELIVERED/DEAD; raises TransientDeliveryError to retry."""
        headers = {"Content-Type": "application/json"}
        answer = await send(self.session, "POST", url, orjson.dumps(payload), headers, self.timeout)
        if isinstance(answer, Delivery):
            return answer
        return verdict_for("webhook", *answer)
