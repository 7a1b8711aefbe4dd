"""A fleet that keeps heartbeating in the background of a test, through our outages."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

from statusd.lifecycle import State
from statusd.simulate.control import Beat, StatusdAPI


@contextlib.asynccontextmanager
async def heartbeating(
    api: StatusdAPI, tokens: dict[str, str], alive: set[str], state: State
) -> AsyncIterator[None]:
    """Every workload in `alive` (mutable: the test adds and drops ids) reports `state` about
    every 0.5 s. Failures (503 while Redis is down, connection refused while statusd is) are
    ignored: the next round retries, as a real container would."""
    seqs = itertools.count(10)

    async def loop() -> None:
        while True:
            seq = next(seqs)
            beats = [Beat(w, tokens[w], state, seq) for w in sorted(alive)]
            with contextlib.suppress(Exception):
                await api.heartbeat(beats)
            await asyncio.sleep(0.5)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
