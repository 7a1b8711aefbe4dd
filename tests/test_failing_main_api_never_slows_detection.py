"""A main API answering 503 never slows detection, with one worker serving `sweep,poll,sync` (the
compose layout): drains retrying the main API never hold every prefork slot, so a workload that
goes silent is declared UNREACHABLE within the normal bound.

Real API (with consumers), real `statusd worker --beat` with two prefork children, a real
redis-server as broker, a loopback main API failing every request, and real status endpoints.
Each drain is made to hold its slot for long (it sends one row at a time and keeps retrying it),
and there are rows for many workloads, so drains alone could fill the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from statusd.lifecycle import Kind, State
from statusd.settings import Settings
from statusd.simulate.control import Beat, StatusdAPI
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.celery_procs import broker, running_worker
from tests.support.fleet_api import running_api
from tests.support.fleet_peer import StatusPeer
from tests.support.fleet_wait import wait_until
from tests.support.main_api import FakeMainAPI
from tests.support.sync_worker import MAIN_TOKEN

TTL, INTERVAL, POLL_TIMEOUT = 1.0, 0.5, 0.5
# Detection needs TTL + one sweep interval + the failing polls; processes on a busy 2-core box
# (other test files run in parallel) get generous slack on top. A drain holds its slot for
# DRAIN_HOLD_S, far longer than this bound.
SLACK = 20.0
DETECTION_BOUND = TTL + INTERVAL + 2 * POLL_TIMEOUT + SLACK
DRAIN_HOLD_S = 120.0
BUSY_WORKLOADS = 8


@pytest.fixture
async def main_api() -> AsyncIterator[FakeMainAPI]:
    api = FakeMainAPI(MAIN_TOKEN)
    api.faults.error_ratio = 1.0  # every request: 503
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def peer() -> AsyncIterator[StatusPeer]:
    p = StatusPeer()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def stack_settings(
    make_settings: Callable[..., Settings], main_api: FakeMainAPI, tmp_path: Path
) -> Iterator[Settings]:
    with broker("redis", tmp_path) as broker_url:
        yield make_settings(
            broker_url=broker_url,
            main_api_url=main_api.url,
            main_api_token=MAIN_TOKEN,
            heartbeat_ttl=TTL,
            sweep_interval=INTERVAL,
            poll_timeout=POLL_TIMEOUT,
            unreachable_after=2,
            lost_after=600,
            start_timeout=600,
            consumers=1,
            consumer_block_ms=100,
            # Each drain sends one row at a time and retries it for DRAIN_HOLD_S; beat sends one
            # every half second.
            sync_interval=0.5,
            sync_concurrency=1,
            sync_timeout=0.5,
            sync_attempts=500,
            sync_budget=DRAIN_HOLD_S,
            sync_lease=DRAIN_HOLD_S + 10,
            sync_backoff_max=1.0,
        )


@pytest.fixture
async def stack(
    stack_settings: Settings, tmp_path: Path, redis: Redis, main_api: FakeMainAPI
) -> AsyncIterator[str]:
    """API (with consumers) + one `statusd worker --beat` for sweep, poll and sync. A worker's
    warm shutdown waits for the drains it runs, so at the end the main API is healed and the
    processes are stopped off the event loop, where the fake main API answers."""
    env = settings_env(stack_settings)
    with contextlib.ExitStack() as processes:

        def start() -> str:
            url = processes.enter_context(running_api(env, tmp_path))
            processes.enter_context(
                running_worker(env, tmp_path, queues="sweep,poll,sync", concurrency=2, beat=True)
            )
            return url

        try:
            yield await asyncio.to_thread(start)
        finally:
            main_api.faults.error_ratio = 0.0
            await asyncio.to_thread(processes.close)


async def _state(api: StatusdAPI, wid: str) -> str:
    return str((await api.workload(wid))["state"])


# PostgreSQL, as the compose layout runs it (the rule is the same on SQLite; once is enough).
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_silent_workload_is_unreachable_in_time_while_the_main_api_fails(
    stack: str, main_api: FakeMainAPI, peer: StatusPeer
) -> None:
    busy = [f"busy{n}" for n in range(BUSY_WORKLOADS)]
    async with StatusdAPI(stack, TEST_API_TOKEN) as api:
        # Registrations and their first transitions: outbox rows for the main API, one per
        # workload at the head of its order, each retried by a drain of its own.
        tokens = {w: await api.register(w, Kind.TRAINING, peer.url(w), {}) for w in busy}
        for w in busy:
            peer.answer(w, "RUNNING")  # alive: polled when their heartbeats stop, and fine
        assert await api.heartbeat([Beat(w, tokens[w], State.RUNNING, 1) for w in busy])
        await main_api.wait_until(
            lambda: main_api.requests >= 4,
            within=SLACK,
            what="drains retrying the failing main API",
        )

        token = await api.register("silent", Kind.TRAINING, peer.url("silent"), {})
        peer.fail("silent", 503)  # its status endpoint is gone too
        assert await api.heartbeat([Beat("silent", token, State.RUNNING, 1)]) == 1
        await wait_until(
            lambda: _state(api, "silent"),
            lambda s: s == "RUNNING",
            within=SLACK,
            what="silent RUNNING by heartbeat",
        )
        # No heartbeat from here on: UNREACHABLE within the normal bound, 503s or not.
        await wait_until(
            lambda: _state(api, "silent"),
            lambda s: s == "UNREACHABLE",
            within=DETECTION_BOUND,
            what="silent -> UNREACHABLE while the main API answers 503",
        )
    assert main_api.total_accepted() == 0  # the main API really failed throughout
