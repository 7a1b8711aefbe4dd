"""A real aiohttp webhook receiver on 127.0.0.1 for alert tests: records alerts, can be down,
can fail a ratio of requests with 5xx, can refuse (4xx) for good."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson
from aiohttp import web

from tests.support.loopback import LoopbackServer


class WebhookReceiver(LoopbackServer):
    """`await hook.start()`; `hook.url` goes into STATUSD_ALERT_WEBHOOKS."""

    def __init__(self, *, port: int | None = None, path: str = "/hook", seed: int = 7) -> None:
        super().__init__(port)
        self.path = path
        self.alerts: list[dict[str, Any]] = []  # accepted alert bodies, arrival order
        self.requests = 0
        self.error_ratio = 0.0
        self.reject_status: int | None = None  # answer this permanent 4xx to everything
        self.random = random.Random(seed)

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post(self.path, self._receive)

    def events(self, workload_id: str | None = None) -> list[str]:
        return [
            a["event"]
            for a in self.alerts
            if workload_id is None or a["workload_id"] == workload_id
        ]

    async def wait_for(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if len(self.alerts) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"webhook: {len(self.alerts)} alerts after {within}s, wanted {count}: {self.alerts}"
        )

    async def _receive(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.reject_status is not None:
            return web.json_response({"error": "gone"}, status=self.reject_status)
        if self.error_ratio and self.random.random() < self.error_ratio:
            return web.json_response({"error": "busy"}, status=503)
        body = orjson.loads(await request.read())
        self.alerts.append(body)
        return web.json_response({"ok": True})
