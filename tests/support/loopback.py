"""A real aiohttp server on 127.0.0.1 that tests start, stop (connections refused) and restart."""

from __future__ import annotations

from aiohttp import web

from statusd.redis_runtime import free_port


class LoopbackServer:
    """Subclasses add their routes in `routes`; `stop()` then `start()` simulates an outage."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening: new connections are refused until `start()`."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
