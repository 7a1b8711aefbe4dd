"""A Redis with AOF (appendfsync always) killed and restarted mid-flow: every heartbeat that got a
202 is applied, and during the outage ingest answers 503 with Retry-After (never 500, never hangs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_flow import History, drained, register, send, wait_for
from tests.support.redis_proc import RedisProcess

WORKLOADS = 10
# Each workload walks these states, PER_STATE heartbeats per state, one tick at a time.
PHASES = ["STARTING", "RUNNING", "STOPPING", "SUCCEEDED"]
PER_STATE = 6


@pytest.mark.slow
async def test_every_accepted_heartbeat_survives_a_redis_restart(
    make_settings: Callable[..., Settings], tmp_path: Path, database_url: str
) -> None:
    server = RedisProcess(tmp_path / "redis-aof", appendonly=True)
    url = server.start()
    history = History(database_url)
    try:
        admin = Redis.from_url(url)
        await admin.config_set("appendfsync", "always")  # a 202 means on disk, not "within 1 s"
        await admin.aclose()
        settings = make_settings(
            redis_url=url, consumer_block_ms=100, shard_lease_ms=2000, ingest_timeout=1.0
        )
        keys = Keys(settings.redis_prefix)
        accepted: dict[str, list[tuple[int, str]]] = {}
        statuses: list[int] = []
        async with api_client(settings, consumers=2) as client:
            toks = {f"w{i}": await register(client, f"w{i}", "training") for i in range(WORKLOADS)}
            seq = 0
            outage_at = len(PHASES) * PER_STATE // 2
            for state in PHASES:
                for _ in range(PER_STATE):
                    seq += 1
                    if seq == outage_at:
                        server.kill()  # SIGKILL: only what was fsynced survives
                    if seq == outage_at + 3:
                        server.start()
                    answers = await asyncio.gather(
                        *(send(client, "/v1/heartbeats", t, w, state, seq) for w, t in toks.items())
                    )
                    for wid, (status, doc) in zip(toks, answers, strict=True):
                        statuses.append(status)
                        if status == 202:
                            accepted.setdefault(wid, []).append((seq, state))
                        else:
                            assert status == 503 and doc["error"] == "redis_unavailable", (
                                status,
                                doc,
                            )
                    await asyncio.sleep(0.1)
            assert 503 in statuses and 500 not in statuses

            async def all_done() -> bool:
                return set((await history.states()).values()) == {PHASES[-1]}

            await wait_for(all_done, timeout=90, what="every workload SUCCEEDED after the restart")
            probe = Redis.from_url(url)
            try:
                await wait_for(lambda: drained(probe, keys), timeout=60, what="stream drained")
            finally:
                await probe.aclose()
        rows = await history.transitions()
        for wid, got in accepted.items():
            # Every state that had a 202 was applied, in seq order (a 503 may or may not have been
            # stored: it can only add a transition, never remove one).
            applied = [str(r["to_state"]) for r in rows if r["workload_id"] == wid]
            expected = list(dict.fromkeys(state for _, state in sorted(got)))
            assert [s for s in applied if s in expected] == expected, (wid, applied, expected)
            seqs = [r["seq"] for r in rows if r["workload_id"] == wid]
            assert seqs == sorted(seqs)
    finally:
        server.stop()
        server.kill()
        await history.close()
