"""A scriptable container status endpoint on loopback for sweeper tests.

peer = StatusPeer(); await peer.start()
peer.answer("w1", "SUCCEEDED")   # GET /w/w1 -> 200 {"status": "SUCCEEDED", "seq": <newer each time>}
peer.fail("w2", 503) / peer.hang("w3") / peer.garbage("w4")
peer.hits["w1"]                  # requests received per workload (counted server-side)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import defaultdict

from aiohttp import web

from tests.support.processes import free_port


class StatusPeer:
    def __init__(self) -> None:
        self.modes: dict[str, tuple[str, object]] = {}
        self.hits: dict[str, list[float]] = defaultdict(list)
        self.inflight: dict[str, int] = defaultdict(int)
        self.max_inflight: dict[str, int] = defaultdict(int)
        self._seq = itertools.count(1_000)
        self._runner: web.AppRunner | None = None
        self.base = ""
        self._closing = asyncio.Event()

    def url(self, workload_id: str) -> str:
        return f"{self.base}/w/{workload_id}"

    def answer(self, workload_id: str, state: str) -> None:
        self.modes[workload_id] = ("answer", state)

    def fail(self, workload_id: str, status: int = 503) -> None:
        self.modes[workload_id] = ("fail", status)

    def hang(self, workload_id: str) -> None:
        self.modes[workload_id] = ("hang", None)

    def garbage(self, workload_id: str) -> None:
        self.modes[workload_id] = ("garbage", None)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/w/{id}", self._handle)
        # handler_cancellation: a poller that gave up (timeout) ends the hanging handler too, so
        # `inflight` counts only requests a client is still waiting on.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.2, handler_cancellation=True
        )
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._closing.set()  # hanging handlers return before the runner shuts down
        await asyncio.sleep(0)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        wid = request.match_info["id"]
        self.hits[wid].append(time.monotonic())
        self.inflight[wid] += 1
        self.max_inflight[wid] = max(self.max_inflight[wid], self.inflight[wid])
        try:
            mode, arg = self.modes.get(wid, ("fail", 404))
            if mode == "answer":
                return web.json_response({"status": arg, "seq": next(self._seq)})
            if mode == "hang":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), 3600)
            if mode == "garbage":
                return web.Response(text="<html>surprise</html>", content_type="text/html")
            return web.json_response({"error": "down"}, status=int(arg))  # type: ignore[call-overload]
        finally:
            self.inflight[wid] -= 1
