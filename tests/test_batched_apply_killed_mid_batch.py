"""A consumer batch is one PostgreSQL transaction; kill it half-way and nothing is lost or doubled.

Deterministic window, no sleeps-and-hope: the test holds an ACCESS EXCLUSIVE lock on `outbox`, so
a consumer's batch transaction locks its rows, updates them and inserts their transition rows,
then waits at the outbox INSERT (the test sees it in pg_stat_activity, with a transaction id:
it has written). Then either
- its connection is killed (pg_terminate_backend): the consumer sees a transient error, the whole
  batch rolls back and is retried on a new connection; or
- the `statusd consume` process is SIGKILLed: the batch never commits, its entries stay pending,
  and another consumer takes them over once the lease runs out.
Either way every workload ends with exactly its transitions, each with exactly one outbox row,
in seq order. PostgreSQL only (SQLite's BEGIN IMMEDIATE blocks a batch before it writes anything;
test_consumer_sigkill_loses_nothing covers that window on both databases).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from statusd.ingest.streams import ensure_groups
from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.databases import PG_HOST, PG_PORT, PG_USER
from tests.support.ingest_db_block import pg_database
from tests.support.ingest_flow import History, drained, register, start_consumer, wait_for
from tests.support.processes import ManagedProcess, stop_process

WORKLOADS = 40
SHARDS = 2  # ~20 workloads per consumer batch


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str:  # PostgreSQL only: see the docstring
    template = request.getfixturevalue("postgres_template")
    url: str = template.new_database()
    request.addfinalizer(lambda: template.release(url))
    return url


async def _pg(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=pg_database(url)
    )


@contextlib.asynccontextmanager
async def outbox_locked(url: str) -> AsyncIterator[None]:
    conn = await _pg(url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        yield
        await tx.rollback()
    finally:
        await conn.close()


async def batches_waiting_at_the_outbox(url: str) -> list[int]:
    """Backends of this database inside a transaction that has written (it has an xid) and now
    waits for the outbox lock: batches stopped half-way."""
    conn = await _pg(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'"
            " AND query LIKE 'INSERT INTO outbox%' AND backend_xid IS NOT NULL",
            pg_database(url),
        )
        return [int(r["pid"]) for r in rows]
    finally:
        await conn.close()


async def send_all(
    client: TestClient[Any, Any], toks: dict[str, str], state: str, seq: int
) -> None:
    """One batch request: every workload's heartbeat lands in the streams in one pipeline."""
    items = [{"token": t, "workload_id": w, "status": state, "seq": seq} for w, t in toks.items()]
    resp = await client.post("/v1/heartbeats:batch", json={"items": items})
    body = await resp.json()
    assert resp.status == 200 and body["rejected"] == 0, body


async def assert_exactly_once(url: str, history: History, toks: dict[str, str]) -> None:
    rows = await history.transitions()
    for wid in toks:
        mine = [
            (str(r["from_state"]), str(r["to_state"]), r["seq"])
            for r in rows
            if r["workload_id"] == wid
        ]
        assert mine == [("PENDING", "RUNNING", 1), ("RUNNING", "SUCCEEDED", 2)], wid
    conn = await _pg(url)
    try:
        pairs = await conn.fetch(
            "SELECT t.id, count(o.id) AS n FROM transitions t"
            " LEFT JOIN outbox o ON o.transition_id = t.id GROUP BY t.id"
        )
        orphans = await conn.fetchval(
            "SELECT count(*) FROM outbox o WHERE NOT EXISTS"
            " (SELECT 1 FROM transitions t WHERE t.id = o.transition_id)"
        )
    finally:
        await conn.close()
    assert len(pairs) == 2 * WORKLOADS and {r["n"] for r in pairs} == {1} and orphans == 0


async def test_connection_killed_mid_batch_rolls_the_batch_back_and_retries_it(
    make_settings: Callable[..., Settings], redis: Redis, database_url: str
) -> None:
    settings = make_settings(consumer_block_ms=100, stream_shards=SHARDS, consumers=1)
    keys = Keys(settings.redis_prefix)
    history = History(database_url)
    try:
        async with api_client(settings, consumers=1) as client:
            toks = {f"w{i}": await register(client, f"w{i}", "training") for i in range(WORKLOADS)}
            killed: set[int] = set()
            async with outbox_locked(database_url):
                await send_all(client, toks, "RUNNING", 1)

                async def stopped_half_way() -> bool:
                    return bool(await batches_waiting_at_the_outbox(database_url))

                await wait_for(stopped_half_way, timeout=60, what="a batch waiting mid-way")
                conn = await _pg(database_url)
                try:
                    for pid in await batches_waiting_at_the_outbox(database_url):
                        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
                        killed.add(pid)
                finally:
                    await conn.close()
            assert killed

            async def all_in(state: str) -> bool:
                states = await history.states()
                return all(states[w] == state for w in toks)

            await wait_for(lambda: all_in("RUNNING"), timeout=90, what="the batch retried")
            await wait_for(lambda: drained(redis, keys, SHARDS), timeout=60, what="acked")
            await send_all(client, toks, "SUCCEEDED", 2)
            await wait_for(lambda: all_in("SUCCEEDED"), timeout=90, what="the flow going on")
            await wait_for(lambda: drained(redis, keys, SHARDS), timeout=60, what="acked")
            await assert_exactly_once(database_url, history, toks)
    finally:
        await history.close()


async def test_consumer_sigkilled_mid_batch_loses_nothing_and_applies_nothing_twice(
    make_settings: Callable[..., Settings], redis: Redis, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(consumer_block_ms=100, stream_shards=SHARDS, shard_lease_ms=1500)
    keys = Keys(settings.redis_prefix)
    history = History(database_url)
    procs: list[ManagedProcess] = []
    try:
        async with api_client(settings, consumers=0) as client:
            toks = {f"w{i}": await register(client, f"w{i}", "training") for i in range(WORKLOADS)}
            await ensure_groups(redis, keys, SHARDS)
            async with outbox_locked(database_url):
                procs.append(start_consumer(settings, "a", tmp_path))
                await send_all(client, toks, "RUNNING", 1)

                async def stopped_half_way() -> bool:
                    assert procs[0].returncode is None, procs[0].log_tail()
                    return len(await batches_waiting_at_the_outbox(database_url)) == SHARDS

                await wait_for(stopped_half_way, timeout=60, what="A's batches waiting mid-way")
                procs[0].kill_tree()  # SIGKILL half-way through both batch transactions
            procs.append(start_consumer(settings, "b", tmp_path))

            async def all_in(state: str) -> bool:
                states = await history.states()
                return all(states[w] == state for w in toks)

            await wait_for(lambda: all_in("RUNNING"), timeout=90, what="B taking A's entries over")
            await wait_for(lambda: drained(redis, keys, SHARDS), timeout=60, what="acked by B")
            await send_all(client, toks, "SUCCEEDED", 2)
            await wait_for(lambda: all_in("SUCCEEDED"), timeout=90, what="the flow going on")
            await wait_for(lambda: drained(redis, keys, SHARDS), timeout=60, what="acked")
            await assert_exactly_once(database_url, history, toks)
            assert stop_process(procs[1], signal.SIGTERM) == 0, procs[1].log_tail()
    finally:
        for proc in procs:
            proc.kill_tree()
        await history.close()
