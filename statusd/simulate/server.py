"""One aiohttp server on loopback serving every simulated container's status endpoint.

`GET /w/{id}/status` answers as that container would right now (statusd's container contract, or
its fault). It also counts requests per workload, and how many are in flight at once, so tests can
prove server-side that no workload is polled twice at once or twice in one sweep interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Mapping

import orjson
from aiohttp import web

from statusd.simulate.container import Endpoint, SimContainer

HANG_S = 3600.0  # longer than any poll timeout; the server cancels it on shutdown
GARBAGE = (
    (200, b"<html><body>Internal error</body></html>", "text/html"),
    (200, b'{"status": "BANANA", "seq": 7}', "application/json"),
    (200, b'["RUNNING", 3]', "application/json"),
    (200, b'{"status": "RUNNING"}', "application/json"),
    (200, b'{"status": "RUNNING", "seq": "soon"}', "application/json"),
    (200, b"\x00\xff\xfe garbage", "application/octet-stream"),
    (200, b"x" * (256 * 1024), "text/plain"),  # over any sane STATUSD_POLL_MAX_BYTES
)


STOP_DRAIN_S = 2.0  # at most this long for in-flight answers when the fleet stops


class StatusServer:
    """Serves /w/{id}/status for the containers in `containers` (looked up on every request)."""

    def __init__(
        self,
        containers: Mapping[str, SimContainer],
        now: Callable[[], float],
        host: str = "127.0.0.1",
    ) -> None:
        self.containers = containers
        self.now = now  # seconds since the fleet started
        self.host = host
        self.port = 0
        self.inflight: dict[str, int] = defaultdict(int)
        self.max_inflight: dict[str, int] = defaultdict(int)
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    def url_for(self, workload_id: str) -> str:
        return f"http://{self.host}:{self.port}/w/{workload_id}/status"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/w/{id}/status", self._status)
        # Short shutdown: hanging handlers are cancelled rather than waited for.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port, backlog=1024)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the port the OS picked for port 0

    async def stop(self) -> None:
        # Let hanging handlers finish on their own first: cancelling them inside the runner's
        # shutdown leaves their connections unclosed.
        self._closing.set()
        # Pollers may still be polling (the sweeper outlives the fleet in tests): wait, bounded,
        # until the requests in flight have answered, so the runner's shutdown finds only idle
        # connections to close and cancels no handler mid-response.
        deadline = time.monotonic() + STOP_DRAIN_S
        await asyncio.sleep(0)
        while sum(self.inflight.values()) > 0 and time.monotonic() < deadline:  # noqa: ASYNC110 (bounded, shutdown only)
            await asyncio.sleep(0.01)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _status(self, request: web.Request) -> web.StreamResponse:
        wid = request.match_info["id"]
        container = self.containers.get(wid)
        if container is None:
            return web.json_response({"error": "unknown"}, status=404)
        container.polls.append(time.monotonic())
        self.inflight[wid] += 1
        self.max_inflight[wid] = max(self.max_inflight[wid], self.inflight[wid])
        try:
            return await self._answer(request, container)
        finally:
            self.inflight[wid] -= 1

    async def _answer(self, request: web.Request, c: SimContainer) -> web.StreamResponse:
        t = self.now()
        mode = c.endpoint(t)
        if mode is Endpoint.ANSWER:
            body = orjson.dumps({"status": c.true_state(t).value, "seq": c.next_seq()})
            return web.Response(body=body, content_type="application/json")
        if mode is Endpoint.UNAVAILABLE:
            return web.json_response({"error": "starting"}, status=503)
        if mode is Endpoint.HANG:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), HANG_S)
            return web.Response(status=504)
        if mode is Endpoint.RESET:
            if request.transport is not None:
                request.transport.abort()  # the client sees the connection dropped
            return web.Response(status=500)  # never delivered: the connection is gone
        status, body, ctype = GARBAGE[len(c.polls) % len(GARBAGE)]
        return web.Response(status=status, body=body, content_type=ctype)
