"""Judge silence only by what we could have heard: `statusd serve` down for 3 x TTL while the worker
and beat keep sweeping, and 50 workloads without a status_url keep trying, gives zero UNREACHABLE
once ingest is back; the same across a full restart of every statusd process. A workload that
really falls silent afterwards still goes UNREACHABLE (the sweeper was not simply switched off).

Real processes (API with consumers, `statusd worker`, `statusd beat`), real Redis, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from statusd import selfwatch
from statusd.hearing import read_hearing
from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.settings import Settings
from statusd.simulate.control import StatusdAPI
from statusd.staleness import deaf_until
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.celery_procs import broker, running_beat, running_worker
from tests.support.fleet_api import running_api
from tests.support.fleet_wait import wait_until
from tests.support.heartbeating import heartbeating
from tests.support.ingest_flow import History
from tests.support.processes import all_running, free_port

pytestmark = pytest.mark.slow

TTL, INTERVAL = 2.0, 0.5
FLEET = 50
OUTAGE_S = 3 * TTL  # how long statusd stays down: the scenario's length, not a wait
SLACK = 30.0


def sweeper(env: dict[str, str], log_dir: Path) -> list[contextlib.AbstractContextManager[Any]]:
    """The worker and the beat, for `all_running` (started and stopped side by side)."""
    return [
        running_worker(env, log_dir, queues="sweep,poll", concurrency=2),
        running_beat(env, log_dir),
    ]


async def unreachable(history: History) -> list[str]:
    return [t["workload_id"] for t in await history.transitions() if t["to_state"] == "UNREACHABLE"]


# On PostgreSQL, as the compose layout runs it: what is judged here is the hearing record and
# the sweeper's rule in Redis, the same over either database (the verdicts' writes are proven on
# both by the lifecycle's own tests).
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_our_outage_is_not_theirs(
    make_settings: Callable[..., Settings], tmp_path: Path, redis: Redis
) -> None:
    with broker("redis", tmp_path) as broker_url:
        settings = make_settings(
            broker_url=broker_url,
            heartbeat_ttl=TTL,
            sweep_interval=INTERVAL,
            poll_timeout=0.5,
            consumers=1,
            consumer_block_ms=100,
        )
        env = settings_env(settings)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        history = History(settings.database_url)
        ids = [f"nb-{n:02d}" for n in range(FLEET)]
        tokens: dict[str, str] = {}
        alive: set[str] = set()  # the heartbeats' loop beats for each one once it is registered
        try:
            async with StatusdAPI(url, TEST_API_TOKEN) as api:
                with all_running(*sweeper(env, tmp_path)):
                    async with heartbeating(api, tokens, alive, State.READY):
                        with running_api(env, tmp_path, port=port):
                            for w in ids:
                                tokens[w] = await api.register(w, Kind.NOTEBOOK, None, {"f": "o"})
                            alive.update(ids)
                            await _all_ready(api)
                        # 1. Only ingest is down; the worker and beat keep sweeping.
                        await asyncio.sleep(OUTAGE_S)
                        with running_api(env, tmp_path, port=port):
                            await _heard_again(api, ids, redis, settings)
                            assert await unreachable(history) == []

                # 2. Every statusd process down for as long, then all of them back.
                async with heartbeating(api, tokens, alive, State.READY):
                    await asyncio.sleep(OUTAGE_S)
                    with all_running(
                        *sweeper(env, tmp_path), running_api(env, tmp_path, port=port)
                    ):
                        await _heard_again(api, ids, redis, settings)
                        assert await unreachable(history) == []

                        # 3. A workload that really falls silent is still judged.
                        alive.discard("nb-00")
                        await wait_until(
                            lambda: api.workload("nb-00"),
                            lambda w: w["state"] == "UNREACHABLE",
                            within=2 * TTL + SLACK,
                            what="a really silent workload UNREACHABLE",
                        )
                        assert await unreachable(history) == ["nb-00"]
        finally:
            await history.close()


async def _all_ready(api: StatusdAPI) -> None:
    await wait_until(
        lambda: api.states("f:o"),
        lambda s: len(s) == FLEET and all(v is State.READY for v in s.values()),
        within=SLACK,
        what="the fleet READY by heartbeat",
    )


async def _heard_again(api: StatusdAPI, ids: list[str], redis: Redis, settings: Settings) -> None:
    """Ingest is back: wait until sweeps have run well past the startup grace (silence counts
    again), then every workload must have been heard and judged fresh by the ordinary rule."""
    await _all_ready(api)
    keys = Keys(settings.redis_prefix)

    async def judged_after() -> float:
        until = deaf_until(await read_hearing(redis, keys), settings, time.time())
        return math.inf if until is None else until + 2 * INTERVAL

    target = await judged_after()
    assert target != math.inf, "ingest is back: the grace has an end"
    await wait_until(
        lambda: selfwatch.last_sweep_success(redis, keys),
        lambda last: last is not None and last > target,
        within=TTL + SLACK,
        what="sweeps past the startup grace",
    )
    for w in ids:
        shown = await api.workload(w)
        assert shown["stale"] is False, shown
