"""Celery's soft time limit is an exception raised from a signal handler, in the middle of the
worker's event loop. The interrupted task must be cancelled and unwound right there, not left
pending on the loop to resume during the next task."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest
from billiard.exceptions import SoftTimeLimitExceeded

from statusd.celery import worker_runtime


@pytest.fixture
def soft_limit_in() -> Iterator[None]:
    def fire(signum: int, frame: object) -> None:
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_a_soft_limit_cancels_the_task_before_the_loop_runs_anything_else(
    soft_limit_in: None,
) -> None:
    events: list[str] = []

    async def slow_task() -> None:
        try:
            await asyncio.sleep(5)
            events.append("resumed")
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            events.append("unwound")

    async def next_task() -> str:
        await asyncio.sleep(0.05)
        return "next"

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(SoftTimeLimitExceeded):
            worker_runtime.run_on(loop, slow_task())
        assert events == ["cancelled", "unwound"]
        assert not [t for t in asyncio.all_tasks(loop) if not t.done()]
        assert worker_runtime.run_on(loop, next_task()) == "next"
        assert events == ["cancelled", "unwound"]  # never resumed by the next task's run
    finally:
        loop.close()
