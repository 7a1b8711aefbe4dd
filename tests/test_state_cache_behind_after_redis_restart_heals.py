"""A Redis crash that lost the state cache's last writes does not leave a workload stuck in a
verdict it has left: Redis with AOF fsynced every second (the production setting) loses up to a
second of writes in a crash, among them the cache's update for a transition the database committed
(the sweeper's UNREACHABLE, say). The entry before it, still READY, then made every READY
heartbeat look like "no change": skipped without the database, the workload stayed UNREACHABLE
although it kept heartbeating. After a restart the consumers drop the cache, so the heartbeats
reach the database and the workload recovers.

Real redis-server (restarted by the test; the lost write reproduced by putting the entry's bytes
from before the transition back), both databases, the API with an in-process consumer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from statusd.app_keys import RUNTIME
from statusd.keys import split_value
from statusd.lifecycle import Source, State
from statusd.settings import Settings
from statusd.transitions import Observation, apply_observation
from tests.support.api_client import api_client
from tests.support.ingest_flow import History, register, send
from tests.support.redis_proc import RedisProcess

WAIT_S = 30.0  # bounded; a recovery takes a housekeeping pass and a heartbeat


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "redis", appendonly=True)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_a_workload_heartbeating_after_a_lost_cache_write_recovers(
    make_settings: Callable[..., Settings], store: RedisProcess, database_url: str
) -> None:
    settings = make_settings(
        redis_url=store.url, consumer_block_ms=100, consumer_housekeeping_s=0.2
    )
    history = History(database_url)
    direct = Redis.from_url(store.url)
    try:
        async with api_client(settings, consumers=1) as client:
            runtime = client.server.app[RUNTIME]
            token = await register(client, "w1", "deployment")
            seq = 1
            assert (await send(client, "/v1/heartbeats", token, "w1", "READY", seq))[0] == 202
            bucket = runtime.keys.registration_of("w1")  # its cache part follows the "/"
            deadline = time.monotonic() + WAIT_S
            while (await history.states()).get("w1") != "READY" or not split_value(
                await direct.hget(bucket, "w1")  # type: ignore[misc]
            )[1]:
                assert time.monotonic() < deadline, "READY never applied and cached"
                await asyncio.sleep(0.05)
            before = await direct.hget(bucket, "w1")

            # The sweeper's verdict commits; the crash then loses the cache's update of it.
            await apply_observation(
                runtime.ledger,
                Observation("w1", State.UNREACHABLE, Source.SWEEPER, actor="sweeper"),
            )
            assert (await history.states())["w1"] == "UNREACHABLE"
            await direct.hset(bucket, "w1", before)  # type: ignore[misc]
            await direct.aclose()
            await asyncio.to_thread(store.restart)  # a new server run, the stale entry kept
            direct = Redis.from_url(store.url)

            # The container heartbeats on, READY as before, every few moments.
            deadline = time.monotonic() + WAIT_S
            while (await history.states())["w1"] != "READY":
                assert time.monotonic() < deadline, "the workload stayed UNREACHABLE"
                seq += 1
                await send(client, "/v1/heartbeats", token, "w1", "READY", seq)
                await asyncio.sleep(0.3)
    finally:
        await direct.aclose()
        await history.close()
