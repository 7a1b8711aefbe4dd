"""statusd on a real Redis Cluster (3 primaries, one replica each): two `serve` processes and one
`consume` apply 10,000 heartbeats over 1,000 workloads once each, in seq order, while a primary
is SIGKILLed mid-flow and its replica promoted; then the sweeper finds a silent workload on every
stream shard.

Why it holds: every key one script or MULTI touches carries its stream shard's hash tag
(statusd.keys), so the cluster never refuses a call; a flush answers 202 only after WAIT says a
replica has it, so a promoted replica has every accepted heartbeat; a heartbeat answered 503
is sent again (idempotent by seq).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from statusd.keys import shard_of
from statusd.runtime import open_pools
from statusd.settings import RedisMode, Settings
from statusd.staleness import Judge
from statusd.sweeper.sweep import sweep
from tests.conftest import TEST_API_TOKEN, TEST_SECRET, settings_env
from tests.support.ingest_flow import History, wait_for, workloads_on_shards
from tests.support.processes import free_port, start_statusd, wait_for_http_async
from tests.support.redis_ha import RedisClusterProcs

WORKLOADS = 1000
# 10 heartbeats per workload (seq 1..10): the phase each seq reports.
PHASES = ["STARTING"] * 3 + ["RUNNING"] * 3 + ["STOPPING"] * 3 + ["SUCCEEDED"]
CHANGES = ["STARTING", "RUNNING", "STOPPING", "SUCCEEDED"]
CONCURRENCY = 64
SHARDS = 16

pytestmark = [pytest.mark.redis_ha, pytest.mark.slow, pytest.mark.timeout(360)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterProcs]:
    procs = RedisClusterProcs(tmp_path / "cluster")
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()


class Sender:
    """Bounded-concurrency HTTP to the two servers; a heartbeat answered 503 (not stored, or too
    few replicas) is sent again, to the other server, until it is stored."""

    def __init__(
        self, http: aiohttp.ClientSession, bases: list[str], concurrency: int = CONCURRENCY
    ) -> None:
        self.http = http
        self.bases = bases
        self.limit = asyncio.Semaphore(concurrency)
        self.retried = 0

    async def register(self, n: int, wid: str) -> str:
        async with (
            self.limit,
            self.http.post(
                f"{self.bases[n % 2]}/v1/workloads",
                json={"id": wid, "kind": "training"},
                headers={"Authorization": f"Bearer {TEST_API_TOKEN}"},
            ) as resp,
        ):
            assert resp.status == 201, await resp.text()
            return str((await resp.json())["heartbeat_token"])

    async def heartbeat(self, n: int, wid: str, status: str, seq: int, token: str) -> None:
        body = {"workload_id": wid, "status": status, "seq": seq}
        while True:
            try:
                async with (
                    self.limit,
                    self.http.post(
                        f"{self.bases[n % 2]}/v1/heartbeats",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                    ) as resp,
                ):
                    if resp.status == 202:
                        return
                    assert resp.status == 503, (resp.status, await resp.text())
            except aiohttp.ClientError:
                pass
            self.retried += 1
            n += 1
            await asyncio.sleep(0.2)


def cluster_settings(
    cluster: RedisClusterProcs, broker: str, prefix: str, database_url: str, tmp_path: Path
) -> Settings:
    return Settings(
        database_url=database_url,
        redis_prefix=prefix,
        secret=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        state_dir=tmp_path / "state",
        log_format="json",
        redis_mode=RedisMode.CLUSTER,
        redis_url=f"redis://127.0.0.1:{cluster.nodes[0].port}/0",
        broker_url=broker,  # kombu does not speak Redis Cluster: a standalone broker
        stream_shards=SHARDS,
        consumer_block_ms=200,
        ingest_timeout=3.0,
    )


async def assert_applied_once_in_order(history: History) -> None:
    per_workload: dict[str, list[str]] = {}
    seqs: dict[str, list[int]] = {}
    for row in await history.transitions():
        per_workload.setdefault(row["workload_id"], []).append(str(row["to_state"]))
        seqs.setdefault(row["workload_id"], []).append(int(row["seq"]))
    assert len(per_workload) == WORKLOADS
    wrong = {w: got for w, got in per_workload.items() if got != CHANGES}
    assert not wrong, f"{len(wrong)} wrong histories, e.g. {next(iter(wrong.items()))}"
    assert all(s == sorted(s) for s in seqs.values())  # committed in seq order


async def swept_silent(settings: Settings, sender: Sender) -> tuple[set[str], set[str]]:
    """Register one never-heard workload per shard; what one real sweep finds stale."""
    silent = {ids[0] for ids in workloads_on_shards(SHARDS, 1, prefix="silent-").values()}
    for n, wid in enumerate(sorted(silent)):
        await sender.register(n, wid)
    await asyncio.sleep(1.0)
    rt = await open_pools(settings, redis_max_connections=8)
    try:
        result = await sweep(
            rt.redis,
            rt.engine,
            rt.keys,
            judge=Judge(allowed=600, start_timeout=0.5, now=time.time()),
            poll_chunk=100,
            lease_ms=10_000,
            lock_ms=10_000,
            token="cluster-test",
        )
    finally:
        await rt.close()
    return {wid for chunk in result.chunks for wid in chunk}, silent


async def test_cluster_failover_applies_every_accepted_heartbeat_once(
    cluster: RedisClusterProcs,
    redis_server: str,
    redis_prefix: str,
    pg_url: str,
    tmp_path: Path,
) -> None:
    settings = cluster_settings(cluster, redis_server, redis_prefix, pg_url, tmp_path)
    env = settings_env(settings)
    ports = [free_port(), free_port()]
    procs = [
        start_statusd(["serve", "--port", str(p), "--consumers", "0"], env=env, log_dir=tmp_path)
        for p in ports
    ]
    procs.append(start_statusd(["consume", "--consumers", "2"], env=env, log_dir=tmp_path))
    history = History(pg_url)
    try:
        for port, proc in zip(ports, procs, strict=False):
            await wait_for_http_async(f"http://127.0.0.1:{port}/healthz", proc=proc)
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as http:
            sender = Sender(http, [f"http://127.0.0.1:{port}" for port in ports])
            ids = [f"w{i:04d}" for i in range(WORKLOADS)]
            tokens = dict(
                zip(
                    ids,
                    await asyncio.gather(*(sender.register(n, w) for n, w in enumerate(ids))),
                    strict=True,
                )
            )
            victim = cluster.primary_of(f"{settings.redis_prefix}{{s3}}:hb")
            for seq, status in enumerate(PHASES, start=1):
                if seq == 5:  # mid-flow: SIGKILL a primary, without waiting for anything
                    victim.kill()
                await asyncio.gather(
                    *(sender.heartbeat(n, w, status, seq, tokens[w]) for n, w in enumerate(ids))
                )
            cluster.wait_promoted(victim)

            async def finished() -> bool:
                states = await history.states()
                return sum(1 for s in states.values() if s == CHANGES[-1]) == WORKLOADS

            await wait_for(finished, timeout=120, every=0.5, what="all workloads SUCCEEDED")
            await assert_applied_once_in_order(history)
            found, silent = await swept_silent(settings, sender)
        assert found == silent, (sorted(found), sorted(silent))
        assert {shard_of(w, SHARDS) for w in found} == set(range(SHARDS))
        for proc in procs:
            assert proc.returncode is None, proc.log_tail()
    finally:
        for proc in procs:
            proc.kill_tree()
        await history.close()
