"""statusd on Redis Sentinel (a primary, a replica, three sentinels): the primary is SIGKILLed
mid-flow, Sentinel promotes the replica, statusd reconnects by itself (the primary's address is
asked of the sentinels), and every heartbeat answered 202 is applied once; those sent during the
switch were answered 503 (and sent again), never accepted and lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from statusd.settings import RedisMode, Settings
from tests.conftest import TEST_API_TOKEN, TEST_SECRET, settings_env
from tests.support.ingest_flow import History, wait_for
from tests.support.processes import free_port, start_statusd, wait_for_http_async
from tests.support.redis_ha import SentinelProcs
from tests.test_redis_cluster_failover_loses_nothing import Sender

WORKLOADS = 200
CHANGES = ["STARTING", "RUNNING", "STOPPING", "SUCCEEDED"]

pytestmark = [pytest.mark.redis_ha, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelProcs]:
    procs = SentinelProcs(tmp_path / "sentinel")
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()


async def test_sentinel_failover_loses_no_accepted_heartbeat(
    sentinels: SentinelProcs, redis_server: str, redis_prefix: str, pg_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=pg_url,
        redis_prefix=redis_prefix,
        secret=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        state_dir=tmp_path / "state",
        log_format="json",
        redis_mode=RedisMode.SENTINEL,
        redis_sentinels=[f"127.0.0.1:{s.port}" for s in sentinels.sentinels],
        redis_sentinel_master=sentinels.name,
        broker_url=redis_server,
        consumer_block_ms=200,
        ingest_timeout=2.0,
    )
    port = free_port()
    proc = start_statusd(
        ["serve", "--port", str(port), "--consumers", "2"],
        env=settings_env(settings),
        log_dir=tmp_path,
    )
    history = History(pg_url)
    try:
        await wait_for_http_async(f"http://127.0.0.1:{port}/healthz", proc=proc)
        old_primary = sentinels.current_primary_port()
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            sender = Sender(http, [base, base], concurrency=16)
            ids = [f"s{i:03d}" for i in range(WORKLOADS)]
            tokens = dict(
                zip(
                    ids,
                    await asyncio.gather(*(sender.register(n, w) for n, w in enumerate(ids))),
                    strict=True,
                )
            )
            for seq, status in enumerate(CHANGES, start=1):
                if seq == 3:  # mid-flow: the primary dies; nothing waits for the promotion
                    assert sentinels.primary is not None
                    sentinels.primary.kill()
                await asyncio.gather(
                    *(sender.heartbeat(n, w, status, seq, tokens[w]) for n, w in enumerate(ids))
                )
            assert sentinels.current_primary_port() != old_primary  # the replica was promoted
            assert sender.retried > 0  # the switch was answered 503, then sent again

            async def finished() -> bool:
                states = await history.states()
                return sum(1 for s in states.values() if s == CHANGES[-1]) == WORKLOADS

            await wait_for(finished, timeout=90, every=0.5, what="all workloads SUCCEEDED")
        per_workload: dict[str, list[str]] = {}
        for row in await history.transitions():
            per_workload.setdefault(row["workload_id"], []).append(str(row["to_state"]))
        wrong = {w: got for w, got in per_workload.items() if got != CHANGES}
        assert len(per_workload) == WORKLOADS and not wrong, next(iter(wrong.items()), None)
        assert proc.returncode is None, proc.log_tail()
    finally:
        proc.kill_tree()
        await history.close()
