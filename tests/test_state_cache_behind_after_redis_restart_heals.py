"""A Redis crash that lost the state cache's last writes does not leave a workload stuck in a
verdict it has left: Redis with AOF fsynced every second (the production setting) loses up to a
second of writes in a crash, among them the cache's update for a transition the database committed
(the sweeper's UNREACHABLE, say). The entry before it, still READY, then made every READY
heartbeat look like "no change": skipped without the database, the workload stayed UNREACHABLE
although it kept heartbeating. After a restart the consumers drop the cache, so the heartbeats
reach the database and the workload recovers; and nothing is read from the cache before that
drop, so the first report after the restart is in the history with its seq (a flapping
container's change read against a stale entry would be skipped as "no change": answered 202,
missing from its history).

Real redis-server (restarted by the test; the lost write reproduced by putting the entry's bytes
from before the transition back), both databases, the API with an in-process consumer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


async def _stale_entry_after_a_restart(
    client: Any, store: RedisProcess, history: History
) -> tuple[str, int]:
    """w1 READY in the database and the cache; the sweeper's UNREACHABLE commits; a crash loses
    the cache's update of it, and Redis restarts (a new server run) with the stale READY entry.
    Returns w1's heartbeat token and its last seq."""
    runtime = client.server.app[RUNTIME]
    direct = Redis.from_url(store.url)
    try:
        token = await register(client, "w1", "deployment")
        assert (await send(client, "/v1/heartbeats", token, "w1", "READY", 1))[0] == 202
        bucket = runtime.keys.registration_of("w1")  # its cache part follows the "/"
        deadline = time.monotonic() + WAIT_S
        while (await history.states()).get("w1") != "READY" or not split_value(
            await direct.hget(bucket, "w1")  # type: ignore[misc]
        )[1]:
            assert time.monotonic() < deadline, "READY never applied and cached"
            await asyncio.sleep(0.05)
        before = await direct.hget(bucket, "w1")
        await apply_observation(
            runtime.ledger, Observation("w1", State.UNREACHABLE, Source.SWEEPER, actor="sweeper")
        )
        assert (await history.states())["w1"] == "UNREACHABLE"
        await direct.hset(bucket, "w1", before)  # type: ignore[misc]
    finally:
        await direct.aclose()
    await asyncio.to_thread(store.restart)
    return token, 1


async def test_a_workload_heartbeating_after_a_lost_cache_write_recovers(
    make_settings: Callable[..., Settings], store: RedisProcess, database_url: str
) -> None:
    settings = make_settings(
        redis_url=store.url, consumer_block_ms=100, consumer_housekeeping_s=0.2
    )
    history = History(database_url)
    try:
        async with api_client(settings, consumers=1) as client:
            token, seq = await _stale_entry_after_a_restart(client, store, history)
            # The container heartbeats on, READY as before, every few moments.
            deadline = time.monotonic() + WAIT_S
            while (await history.states())["w1"] != "READY":
                assert time.monotonic() < deadline, "the workload stayed UNREACHABLE"
                seq += 1
                await send(client, "/v1/heartbeats", token, "w1", "READY", seq)
                await asyncio.sleep(0.3)
    finally:
        await history.close()


async def test_the_first_report_after_the_restart_is_applied_not_skipped(
    make_settings: Callable[..., Settings], store: RedisProcess, database_url: str
) -> None:
    """No stale entry is read before the drop, whenever housekeeping next runs: the first report
    after the restart is in the history with its seq (a flapping container's change, skipped as
    "no change", was missing from its history)."""
    settings = make_settings(
        redis_url=store.url, consumer_block_ms=100, consumer_housekeeping_s=3600
    )
    history = History(database_url)
    try:
        async with api_client(settings, consumers=1) as client:
            token, seq = await _stale_entry_after_a_restart(client, store, history)
            deadline = time.monotonic() + WAIT_S
            while (await send(client, "/v1/heartbeats", token, "w1", "READY", seq + 1))[0] != 202:
                assert time.monotonic() < deadline, "Redis never took the report after its restart"
                await asyncio.sleep(0.1)
            want = {"from_state": "UNREACHABLE", "to_state": "READY", "seq": seq + 1}
            while not any(want.items() <= t.items() for t in await history.transitions("w1")):
                assert time.monotonic() < deadline, (
                    f"READY (seq {seq + 1}) accepted, missing from the history: "
                    f"{await history.transitions('w1')}"
                )
                await asyncio.sleep(0.1)
    finally:
        await history.close()
