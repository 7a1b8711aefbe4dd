"""Two beats and two workers by mistake: no workload is polled twice at once, nor twice in one
sweep interval (counted server-side by the containers themselves)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from statusd.lifecycle import Kind, State
from statusd.settings import Settings
from statusd.simulate.control import Beat, StatusdAPI
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.celery_procs import DEPLOYMENTS, running_beat, running_worker
from tests.support.fleet_api import running_api
from tests.support.fleet_peer import StatusPeer
from tests.support.fleet_wait import wait_until
from tests.support.processes import all_running

INTERVAL = 0.5
WORKLOADS = 40
# 8 sweep intervals of 40 workloads: 320 chances for a double poll, each a failure on its own.
OBSERVE_S = 4.0


@pytest.fixture
async def peer() -> AsyncIterator[StatusPeer]:
    p = StatusPeer()
    await p.start()
    yield p
    await p.stop()


@pytest.mark.slow
@DEPLOYMENTS
async def test_two_beats_two_workers_poll_each_workload_once_per_interval(
    make_settings: Callable[..., Settings],
    deployment_broker: str,
    tmp_path: Path,
    peer: StatusPeer,
    redis: Redis,
) -> None:
    settings = make_settings(
        broker_url=deployment_broker,
        heartbeat_ttl=1,
        sweep_interval=INTERVAL,
        poll_timeout=0.5,
        lost_after=3600,  # they stay stale and keep being polled for the whole observation
        poll_chunk=7,  # several poll tasks per sweep, spread over both workers
        consumers=1,
        consumer_block_ms=100,
    )
    env = settings_env(settings)
    ids = [f"w{n:02d}" for n in range(WORKLOADS)]
    with all_running(
        running_api(env, tmp_path),
        running_worker(env, tmp_path / "w1", concurrency=2),
        running_worker(env, tmp_path / "w2", concurrency=2),
        running_beat(env, tmp_path / "b1"),
        running_beat(env, tmp_path / "b2"),
    ) as (url, *_):
        async with StatusdAPI(url, TEST_API_TOKEN) as api:
            tokens = {w: await api.register(w, Kind.TRAINING, peer.url(w), {}) for w in ids}
            await api.heartbeat([Beat(w, tokens[w], State.RUNNING, 1) for w in ids])
            # Then silence; half the endpoints fail fast, half hang for the whole poll timeout
            # (a long in-flight window in which a second poll would show up as concurrency).
            for n, w in enumerate(ids):
                peer.fail(w, 503) if n % 2 else peer.hang(w)
            await wait_until(
                lambda: asyncio.sleep(0, result=min(len(peer.hits[w]) for w in ids)),
                lambda polled: polled >= 1,
                within=30,
                what="every workload polled",
            )
            start = time.monotonic()
            for w in ids:
                peer.hits[w].clear()
            await asyncio.sleep(OBSERVE_S)
            end = time.monotonic()

    assert max(peer.max_inflight[w] for w in ids) == 1, "a workload was polled twice at once"
    for w in ids:
        hits = [t for t in peer.hits[w] if start <= t <= end]
        gaps = [b - a for a, b in zip(hits, hits[1:], strict=False)]
        assert len(hits) >= 2, f"{w} polled {len(hits)} times in {OBSERVE_S}s: the sweeper stalled"
        # The lease's cool-down is 0.9 x interval; arrival jitter is a few ms. Two beats without
        # it would poll every workload twice per interval, milliseconds apart.
        assert min(gaps) >= 0.5 * INTERVAL, f"{w} polled twice within {min(gaps):.3f}s"
        assert len(hits) <= OBSERVE_S / (0.9 * INTERVAL) + 1
