"""A loopback stand-in for statusd's ingest route with scripted faults, for client retry tests.

It is a peer speaking the public HTTP contract (`POST /v1/heartbeats`), not a fake of statusd's
modules: it records every request and answers from a script, then with a default answer.

    peer = IngestPeer(); await peer.start()
    peer.script(Answer(503, {"error": "redis_unavailable"}, retry_after="2"))
    peer.default = Answer(202, {"status": "accepted", "next_heartbeat_s": 0.1})
    peer.requests[0].body["seq"]
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.loopback import LoopbackServer


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    retry_after: str | None = None


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() on arrival
    body: dict[str, Any]
    authorization: str


@dataclass
class IngestPeer(LoopbackServer):
    default: Answer = field(default_factory=lambda: Answer(202, {"status": "accepted"}))
    requests: list[Received] = field(default_factory=list)
    inflight: int = 0
    _script: deque[Answer] = field(default_factory=deque)
    _held: asyncio.Event | None = None

    def __post_init__(self) -> None:
        super().__init__()

    def script(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order, then with `default`."""
        self._script.extend(answers)

    def hold(self) -> None:
        """Keep every request waiting (in flight) until `release()`."""
        self._held = asyncio.Event()

    def release(self) -> None:
        if self._held is not None:
            self._held.set()
            self._held = None

    def statuses(self) -> list[str]:
        return [r.body["status"] for r in self.requests]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/heartbeats", self._heartbeat)

    async def _heartbeat(self, request: web.Request) -> web.Response:
        received = Received(
            time.monotonic(), await request.json(), request.headers.get("Authorization", "")
        )
        self.requests.append(received)
        self.inflight += 1
        try:
            if self._held is not None:
                await self._held.wait()
            answer = self._script.popleft() if self._script else self.default
        finally:
            self.inflight -= 1
        headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
        return web.Response(
            status=answer.status,
            text=json.dumps(answer.body),
            content_type="application/json",
            headers=headers,
        )
