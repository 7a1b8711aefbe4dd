"""Bounded waiting for fleet tests: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float,
    what: str,
    every: float = 0.2,
) -> T:
    """Call `probe` until `done(result)`; AssertionError naming `what` and the last result after `within` s."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {within:g}s; last seen: {result!r}")
        await asyncio.sleep(every)
