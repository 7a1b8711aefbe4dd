"""`statusd consume` started while Redis is away (an orchestrator restarting it during a Redis
outage) waits for Redis instead of dying with a traceback, and applies heartbeats once Redis is
back. Real processes: the consumer, redis-server started late on the port it was given, and an
in-process API taking the heartbeats.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_flow import History, register, send, start_consumer, wait_for
from tests.support.processes import free_port, stop_process, wait_for_log
from tests.support.redis_proc import RedisProcess


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_consumer_started_during_a_redis_outage_applies_once_redis_is_back(
    make_settings: Callable[..., Settings], tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0", consumer_block_ms=100)
    consumer = start_consumer(settings, "late-redis", tmp_path)
    redis = RedisProcess(tmp_path / "redis", port=port)
    history = History(database_url)
    try:
        await asyncio.to_thread(wait_for_log, consumer, "consumers.group_not_created")
        assert consumer.returncode is None, consumer.log_tail()
        redis.start()
        async with api_client(settings) as client:
            token = await register(client, "late-1", "training")
            status, body = await send(client, "/v1/heartbeats", token, "late-1", "RUNNING", 1)
            assert status == 202, body

            async def applied() -> bool:
                return (await history.states()).get("late-1") == "RUNNING"

            await wait_for(applied, timeout=60, what="the heartbeat applied by the late consumer")
        assert await asyncio.to_thread(stop_process, consumer, signal.SIGTERM) == 0
        assert "Traceback" not in consumer.log_tail(10_000_000)
    finally:
        if consumer.returncode is None:
            consumer.kill_tree()
        redis.stop()
        await history.close()
