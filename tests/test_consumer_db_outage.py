"""The database goes away for 10 s while heartbeats flow: ingest keeps answering 202 (Redis is the
buffer), consumers back off and retry, and when the database is back every change is applied, in
seq order. SQLite: the file (+ -wal/-shm) moved away and back; PostgreSQL: connections refused
(ALLOW_CONNECTIONS false + pg_terminate_backend), then allowed again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from statusd.app_keys import RUNTIME
from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_db_block import database_down
from tests.support.ingest_flow import History, drained, register, send, stream_length, wait_for

WORKLOADS = 20
PHASES = ["STARTING", "RUNNING", "STOPPING", "SUCCEEDED"]
OUTAGE_S = 10.0


@pytest.mark.slow
async def test_changes_sent_while_the_database_is_down_are_applied_in_order(
    make_settings: Callable[..., Settings], redis: Redis, database_url: str
) -> None:
    settings = make_settings(consumer_block_ms=100)
    keys = Keys(settings.redis_prefix)
    history = History(database_url)
    try:
        async with api_client(settings, consumers=2) as client:
            toks = {f"w{i}": await register(client, f"w{i}", "training") for i in range(WORKLOADS)}
            seq = 0

            async def tick(state: str) -> None:
                nonlocal seq
                seq += 1
                answers = await asyncio.gather(
                    *(
                        send(client, "/v1/heartbeats", t, w, state, seq, detail=f"{state}@{seq}")
                        for w, t in toks.items()
                    )
                )
                assert {status for status, _ in answers} == {202}, answers

            async def every(state: str) -> bool:
                return set((await history.states()).values()) == {state}

            await tick(PHASES[0])
            await wait_for(lambda: every(PHASES[0]), what="first change applied before the outage")
            engine = client.server.app[RUNTIME].engine
            async with database_down(database_url, sqlite_engines=[engine]):
                deadline = time.monotonic() + OUTAGE_S
                for state in PHASES[1:3]:  # two changes (with repeats) while the database is gone
                    for _ in range(3):
                        await tick(state)
                while time.monotonic() < deadline:
                    await tick(
                        PHASES[2]
                    )  # steady heartbeats keep flowing: ingest never needs the DB
                    await asyncio.sleep(0.5)
                assert await stream_length(redis, keys) > WORKLOADS
            await tick(PHASES[3])
            await wait_for(
                lambda: every(PHASES[3]), timeout=90, what="everything applied after the outage"
            )
            await wait_for(lambda: drained(redis, keys), timeout=30, what="stream drained")
            rows = await history.transitions()
            for wid in toks:
                mine = [r for r in rows if r["workload_id"] == wid]
                assert [str(r["to_state"]) for r in mine] == PHASES, wid
                seqs = [r["seq"] for r in mine]
                assert seqs == sorted(seqs) and all(r["source"] == "push" for r in mine)
                assert all(r["reason"] == f"{r['to_state']}@{r['seq']}" for r in mine)
    finally:
        await history.close()
