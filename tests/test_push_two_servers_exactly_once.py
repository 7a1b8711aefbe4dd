"""Two `statusd serve` processes on one stream: 20,000 heartbeats over 1,000 workloads, every state
change applied exactly once (transition count per workload == the changes it reported).

Each workload walks STARTING -> RUNNING -> STOPPING -> SUCCEEDED with 5 heartbeats per state
(increasing seq), sent to both servers alternately with bounded concurrency. The phases go out
back to back: a phase is sent as soon as the previous one got its 202s, never waiting for the
consumers, so both processes' consumers hold entries of every phase at once. Only shard leases
(one applier per workload's shard) keep a workload's later report from committing before an
earlier one, which would make the earlier one stale and lose its transition.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.ingest_flow import History, drained, wait_for
from tests.support.processes import free_port, start_statusd, stop_process, wait_for_http_async

WORKLOADS = 1000
PHASES = ["STARTING", "RUNNING", "STOPPING", "SUCCEEDED"]
PER_STATE = 5
CONCURRENCY = 64


@pytest.mark.slow
async def test_two_servers_apply_every_change_exactly_once(
    make_settings: Callable[..., Settings], redis: Redis, tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(consumer_block_ms=200)
    keys = Keys(settings.redis_prefix)
    ports = [free_port(), free_port()]
    servers = [
        start_statusd(
            ["serve", "--port", str(port), "--consumers", "2"],
            env=settings_env(settings),
            log_dir=tmp_path,
        )
        for port in ports
    ]
    history = History(database_url)
    try:
        for port, proc in zip(ports, servers, strict=True):
            await wait_for_http_async(f"http://127.0.0.1:{port}/healthz", proc=proc)
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        limit = asyncio.Semaphore(CONCURRENCY)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http:

            async def post(
                url: str, body: dict[str, object], token: str
            ) -> tuple[int, dict[str, object]]:
                async with (
                    limit,
                    http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp,
                ):
                    return resp.status, await resp.json()

            registered = await asyncio.gather(
                *(
                    post(
                        f"{bases[i % 2]}/v1/workloads",
                        {"id": f"w{i:04d}", "kind": "training"},
                        TEST_API_TOKEN,
                    )
                    for i in range(WORKLOADS)
                )
            )
            assert all(status == 201 for status, _ in registered)
            toks = {str(doc["id"]): str(doc["heartbeat_token"]) for _, doc in registered}
            seq = 0
            sent = 0
            for state in PHASES:
                sends = []
                for _ in range(PER_STATE):
                    seq += 1
                    for n, (wid, token) in enumerate(toks.items()):
                        body = {"workload_id": wid, "status": state, "seq": seq}
                        sends.append(post(f"{bases[n % 2]}/v1/heartbeats", body, token))
                answers = await asyncio.gather(*sends)  # 202 = in the stream: next phase at once
                assert [s for s, _ in answers].count(202) == len(sends), {s for s, _ in answers}
                sent += len(sends)

            async def finished() -> bool:
                states = await history.states()
                return sum(1 for s in states.values() if s == PHASES[-1]) == WORKLOADS

            await wait_for(finished, timeout=240, every=0.5, what=f"all workloads {PHASES[-1]}")
        assert sent == WORKLOADS * len(PHASES) * PER_STATE == 20_000
        await wait_for(lambda: drained(redis, keys), timeout=60, what="stream drained")
        per_workload: dict[str, list[str]] = {}
        seqs: dict[str, list[int]] = {}
        for row in await history.transitions():
            per_workload.setdefault(row["workload_id"], []).append(str(row["to_state"]))
            seqs.setdefault(row["workload_id"], []).append(int(row["seq"]))
        assert len(per_workload) == WORKLOADS
        wrong = {w: got for w, got in per_workload.items() if got != PHASES}
        assert not wrong, (
            f"{len(wrong)} workloads with wrong history, e.g. {next(iter(wrong.items()))}"
        )
        assert all(s == sorted(s) for s in seqs.values())  # committed in seq order
        for proc in servers:
            assert stop_process(proc, signal.SIGTERM) == 0, proc.log_tail()
    finally:
        for proc in servers:
            proc.kill_tree()
        await history.close()
