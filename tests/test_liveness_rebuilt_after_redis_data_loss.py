"""Redis loses its data (killed, restarted EMPTY) under 100 tracked workloads: the liveness view is
rebuilt from the database within TTL + 2 sweeps; the one that went silent at the loss is polled and
reaches SUCCEEDED by pull; none of the 99 that keep heartbeating is marked stale or UNREACHABLE.

Real processes: the API with its consumers, `statusd worker`, `statusd beat`; a data Redis of the
test's own (no persistence, so a restart is empty) and a separate broker Redis; both databases.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from statusd import liveness
from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.settings import Settings
from statusd.simulate.control import Beat, ControlError, StatusdAPI
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.celery_procs import broker, running_beat, running_worker
from tests.support.fleet_api import running_api
from tests.support.fleet_peer import StatusPeer
from tests.support.fleet_wait import wait_until
from tests.support.heartbeating import heartbeating
from tests.support.processes import all_running
from tests.support.redis_proc import RedisProcess

pytestmark = pytest.mark.slow

TTL, INTERVAL = 4.0, 0.5
FLEET = 100
LONELY = "train-000"  # goes silent when Redis loses its data; its endpoint says SUCCEEDED
FINISHER = "train-099"  # reports SUCCEEDED by heartbeat after the loss: consumers work again
SLACK = 30.0  # processes on a busy 2-core box: bounded waits, never timing assertions


@pytest.fixture
async def peer() -> AsyncIterator[StatusPeer]:
    p = StatusPeer()
    await p.start()
    yield p
    await p.stop()


async def test_redis_restarted_empty_rebuilds_liveness(
    make_settings: Callable[..., Settings], tmp_path: Path, peer: StatusPeer
) -> None:
    data = RedisProcess(tmp_path / "data-redis", appendonly=False)
    data_url = data.start()
    try:
        with broker("redis", tmp_path) as broker_url:
            settings = make_settings(
                redis_url=data_url,
                broker_url=broker_url,
                heartbeat_ttl=TTL,
                sweep_interval=INTERVAL,
                poll_timeout=0.5,
                unreachable_after=2,
                consumers=1,
                consumer_block_ms=100,
                shard_lease_ms=1500,
            )
            env = settings_env(settings)
            with all_running(
                running_api(env, tmp_path),
                running_worker(env, tmp_path, queues="sweep,poll", concurrency=2),
                running_beat(env, tmp_path),
            ) as (url, *_):
                await _scenario(url, settings, data, peer)
    finally:
        data.stop()


async def _workload(api: StatusdAPI, wid: str) -> dict[str, Any]:
    """The workload as the API shows it; {} for a 503 (pooled connections to the old Redis are
    found dead one by one after the restart: the API answers 503 + Retry-After, clients retry)."""
    try:
        return await api.workload(wid)
    except ControlError as exc:
        if "HTTP 503" not in str(exc):
            raise
        return {}


async def _scenario(url: str, settings: Settings, data: RedisProcess, peer: StatusPeer) -> None:
    keys = Keys(settings.redis_prefix)
    ids = [f"train-{n:03d}" for n in range(FLEET)]
    async with StatusdAPI(url, TEST_API_TOKEN) as api:
        tokens = {
            w: await api.register(w, Kind.TRAINING, peer.url(w), {"fleet": "loss"}) for w in ids
        }
        for w in ids:
            peer.answer(w, "RUNNING")
        alive = set(ids)
        async with heartbeating(api, tokens, alive, State.RUNNING):
            await wait_until(
                lambda: api.states("fleet:loss"),
                lambda s: sum(v is State.RUNNING for v in s.values()) == FLEET,
                within=SLACK,
                what="the fleet RUNNING by heartbeat",
            )
            # Redis loses everything; at that moment one training's heartbeat thread dies while
            # its endpoint reports it finished.
            alive.discard(LONELY)
            peer.answer(LONELY, "SUCCEEDED")
            data.kill()
            data.start()  # same port, nothing in it
            lost_at = time.monotonic()

            redis = Redis.from_url(data.url)
            try:

                async def view() -> tuple[bool, float | None]:
                    with contextlib.suppress(Exception):
                        marker = await redis.exists(keys.liveness_built)
                        return bool(marker), await redis.zscore(
                            keys.last_seen(keys.shard(LONELY)), LONELY
                        )
                    return False, None

                await wait_until(
                    view,
                    lambda v: v[0] and v[1] is not None,
                    within=TTL + 2 * INTERVAL + SLACK,
                    what="the liveness view rebuilt (LONELY back in last_seen)",
                )
                assert (await liveness.tracked(redis, keys))[0] >= FLEET
            finally:
                await redis.aclose()

            await wait_until(
                lambda: _workload(api, LONELY),
                lambda w: w.get("state") == "SUCCEEDED",
                within=TTL + 2 * INTERVAL + SLACK,
                what="the silent training SUCCEEDED by pull",
            )
            history = await api.transitions(LONELY)
            assert ("SUCCEEDED", "pull") in [(t["to"], t["source"]) for t in history]
            assert time.monotonic() - lost_at >= TTL  # polled one TTL after the rebuild, not before

            # The consumers came back too (the group was recreated, not crash-looped on NOGROUP):
            # a change of state pushed now is applied.
            alive.discard(FINISHER)
            finished = [Beat(FINISHER, tokens[FINISHER], State.SUCCEEDED, 10**9)]
            await wait_until(
                lambda: api.heartbeat(finished),
                lambda accepted: accepted == 1,  # a 503 (retry) is possible, never a 4xx
                within=SLACK,
                what="the SUCCEEDED heartbeat stored",
            )
            await wait_until(
                lambda: _workload(api, FINISHER),
                lambda w: w.get("state") == "SUCCEEDED",
                within=SLACK,
                what="a pushed change applied after the loss",
            )

            # The 98 that kept heartbeating: nobody stale, nobody ever moved by the sweeper.
            for w in ids[1:-1]:
                shown = await wait_until(
                    lambda w=w: _workload(api, w),
                    bool,
                    within=SLACK,
                    what=f"{w} readable (a 503 from a dead pooled connection is retried)",
                )
                assert (shown["state"], shown["stale"]) == ("RUNNING", False), shown
                assert all(t["source"] != "sweeper" for t in await api.transitions(w)), w
