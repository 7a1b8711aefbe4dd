"""During a backlog, drains must not multiply: beat's drain_due never continues itself, and a
`drain` that ran out of time sends one continuation only if it wins the kick's debounce window.

All real: the task functions run the real drain through the worker's own runtime
(statusd.celery.worker_runtime) against the real database and Redis; the backlog is a real main API on
loopback that never answers in time (every request outlasts STATUSD_SYNC_TIMEOUT), with a retry
budget longer than a drain run, so every run ends with `stopped_early`; the window is the real
SET NX PX; a continuation is a real message on the real Redis broker's `sync` queue, read back
from there. Each drain lasts its full run (STATUSD_SYNC_RUN_S, shortened here): a backlog is the
point.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis as redis_sync
from celery import Celery

from statusd.celery import sync_tasks as tasks
from statusd.celery import worker_runtime
from statusd.celery.application import create_celery
from statusd.celery.names import SYNC_DRAIN_TASK, QueueName
from statusd.lifecycle import State
from statusd.runtime import Runtime, open_pools
from statusd.settings import Settings
from statusd.sync.lease import backoff_cap
from statusd.wiring import open_runtime
from tests.support.main_api import FakeMainAPI
from tests.support.sync_worker import register_fleet, walk

pytest_plugins = ("tests.support.sync_fixtures",)
# Each drain runs its full run and then some: scheduled with the long runs, first.
pytestmark = pytest.mark.slow

WORKLOADS = ("w1", "w2", "w3")
RUN_S = 2.0  # STATUSD_SYNC_RUN_S; STATUSD_SYNC_INTERVAL stays below a third of it
SYNC_TIMEOUT = 1.0  # STATUSD_SYNC_TIMEOUT: every attempt times out (the main API sleeps 1.5 s)
SYNC_QUEUE = QueueName.SYNC.value


class Backlog:
    """Drains run as a worker runs them (its runtime, its Celery app), one at a time."""

    def __init__(self, app: Celery, broker_url: str) -> None:
        self.app, self.broker_url = app, broker_url

    async def run(self, task: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        def in_worker() -> dict[str, Any]:
            self.app.set_current()  # Celery's current app is per thread, as in a worker process
            return task(**kwargs)

        report = await asyncio.to_thread(in_worker)
        # Not vacuous: the run really ran out of time with rows still due.
        assert report["stopped_early"] and report["claimed"] >= 1, report
        return report

    def sent_drains(self) -> list[dict[str, Any]]:
        """The drain tasks waiting on the broker's `sync` queue, oldest first."""
        with redis_sync.Redis.from_url(self.broker_url) as broker:
            raw = broker.lrange(SYNC_QUEUE, 0, -1)
        sent = []
        for message in reversed(raw):  # kombu LPUSHes: the tail is the oldest
            envelope = orjson.loads(message)
            _, kwargs, _ = orjson.loads(base64.b64decode(envelope["body"]))
            sent.append(
                {
                    "task": envelope["headers"]["task"],
                    "kwargs": kwargs,
                    "queue": envelope["properties"]["delivery_info"]["routing_key"],
                }
            )
        return sent

    async def window_taken(self, rt: Runtime) -> bool:
        return bool(await rt.redis.exists(rt.keys.sync_kick))


@pytest.fixture
async def backlog(
    e2e_settings: Callable[..., Settings], main_api: FakeMainAPI, broker_url: str
) -> AsyncIterator[tuple[Backlog, Runtime]]:
    # Every send: attempts of 1 s that all time out, retried in-run for longer than a run lasts
    # by more than one backoff sleep (tenacity starts no sleep that would cross the budget), so
    # the first sends are still in flight when the run's time is up, and the run ends soon after.
    # Attempts last SYNC_TIMEOUT each, so at most RUN_S / SYNC_TIMEOUT retries start within a
    # run: the longest sleep a send can be in at the run's end is the next one's (not the 5 s cap
    # that only far later retries reach, which made every run last twice as long).
    main_api.faults.timeout_ratio = 1.0
    main_api.faults.timeout_sleep = 1.5
    settings = e2e_settings(
        sync_run_s=RUN_S,
        sync_interval=0.5,
        sync_timeout=SYNC_TIMEOUT,
        sync_attempts=1000,
        sync_budget=RUN_S + backoff_cap(int(RUN_S / SYNC_TIMEOUT) + 1) + 1.0,
        sync_backoff_max=0.001,  # a row given up on is due again at once, for the next drain
        sync_kick_debounce_ms=600_000,  # every drain below falls in one window
    )
    await main_api.start()
    # The producer side without listeners: no post-commit kick takes the window or sends a drain.
    producer = await open_pools(settings)
    await register_fleet(producer.ledger, WORKLOADS)
    for wid in WORKLOADS:
        await walk(producer.ledger, wid, [State.DEPLOYING])  # one main-DB row each
    app = create_celery(settings)
    worker_runtime.configure(settings, open_runtime)
    try:
        yield Backlog(app, broker_url), producer
    finally:
        await asyncio.to_thread(worker_runtime.shutdown)
        app.close()
        await producer.close()


async def test_drain_due_never_starts_a_chain(backlog: tuple[Backlog, Runtime]) -> None:
    drains, rt = backlog
    await drains.run(tasks.drain_due_task)
    assert drains.sent_drains() == []
    assert not await drains.window_taken(rt)  # it never even asked for the window


async def test_a_drain_continues_only_when_it_wins_the_window(
    backlog: tuple[Backlog, Runtime],
) -> None:
    drains, rt = backlog
    one = [{"task": SYNC_DRAIN_TASK, "kwargs": {"workload_id": None}, "queue": SYNC_QUEUE}]
    await drains.run(tasks.drain_task)
    assert drains.sent_drains() == one and await drains.window_taken(rt)
    await drains.run(tasks.drain_task)  # same window: the first continuation covers it
    await drains.run(tasks.drain_task, workload_id="w1")
    assert drains.sent_drains() == one
