"""A step run again and again in a background task of its own, until stopped: the periodic
refreshes of an ingest process (its listening beat, the replica count its flushes wait for)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError
from structlog.typing import FilteringBoundLogger


class Repeating:
    """Runs `step` every `every_s` seconds from `start` until `stop`.

    A step that fails on Redis or the network is logged as `failed_event` and the next one runs
    on time: each step refreshes something the process keeps using meanwhile, and while Redis is
    down ingest answers 503 anyway."""

    def __init__(
        self,
        step: Callable[[], Awaitable[None]],
        every_s: float,
        *,
        name: str,
        log: FilteringBoundLogger,
        failed_event: str,
    ) -> None:
        self._step = step
        self._every_s = every_s
        self._name = name
        self._log = log
        self._failed_event = failed_event
        self._task: asyncio.Task[None] | None = None
        # Checked by the loop too: a cancel that lands inside a redis-py call can come out as a
        # timeout error (caught and logged below), and the loop must still end.
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except (RedisError, OSError) as exc:
                self._log.warning(self._failed_event, error=str(exc))
            await asyncio.sleep(self._every_s)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
