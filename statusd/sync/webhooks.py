"""Alert webhooks: POST the outbox row's payload (Slack-compatible `text` + fields) to its URL.

2xx delivered; 408 and 429 and 5xx and network failures transient (retried by the drain); any
other 4xx permanent (dead letter: a wrong URL or a revoked hook will not heal by itself).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from statusd.sync.delivery import Delivery, TransientDeliveryError, Verdict, clip
from statusd.sync.main_api import send

RETRYABLE_4XX = frozenset({408, 429})


class WebhookClient:
    """Delivers alert payloads over a session the caller owns."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def post_alert(self, url: str, payload: dict[str, Any]) -> Delivery:
        """POST one alert. Returns DELIVERED/DEAD; raises TransientDeliveryError to retry."""
        headers = {"Content-Type": "application/json"}
        status, body = await send(
            self.session, "POST", url, orjson.dumps(payload), headers, self.timeout
        )
        if 200 <= status < 300:
            return Delivery(Verdict.DELIVERED, status, clip(body))
        if status >= 500 or status in RETRYABLE_4XX:
            raise TransientDeliveryError(f"webhook answered {status}", status, clip(body))
        return Delivery(Verdict.DEAD, status, clip(body))
