"""After a failover that lost commits (asynchronous replication), the Redis state cache holds a
newer version and state than the new primary's row. Versions only grow, so that entry refused
every store, and steady reports matching its state were skipped without the database: the
workload kept a state it no longer reported. The first report that reaches the database shows
the cache ahead of it; the consumer replaces the entry, and the reports are applied again."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from statusd.app_keys import RUNTIME
from statusd.lifecycle import Kind, State
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_flow import History, drained, register, send, wait_for

LOST_COMMITS = 3  # versions the old primary had written and the new one never received


async def test_a_cache_entry_ahead_of_the_database_is_replaced(
    make_settings: Callable[..., Settings], redis: Redis, database_url: str
) -> None:
    settings = make_settings(consumer_block_ms=100)
    history = History(database_url)
    try:
        async with api_client(settings, consumers=1) as client:
            runtime = client.server.app[RUNTIME]
            token = await register(client, "w1", "deployment")
            seq = 0

            async def report(state: str) -> None:
                nonlocal seq
                seq += 1
                status, body = await send(client, "/v1/heartbeats", token, "w1", state, seq)
                assert status == 202, body
                await wait_for(lambda: drained(redis, runtime.keys), what=f"{state}@{seq} handled")

            await report("READY")
            assert (await history.states())["w1"] == "READY"
            version = (await runtime.cache.get_many(["w1"]))["w1"].version
            # What the old primary had committed and acknowledged before it died.
            await runtime.cache.store(
                "w1", State.DEGRADED, version + LOST_COMMITS, 1, Kind.DEPLOYMENT, seq
            )

            await report("DEGRADED")  # matches the entry: skipped without the database
            await report("READY")  # the database path: unchanged there, the entry is ahead
            await report("DEGRADED")
            assert (await history.states())["w1"] == "DEGRADED"
            entry = (await runtime.cache.get_many(["w1"]))["w1"]
            assert (entry.state, entry.version) == (State.DEGRADED, version + 1)
            applied = [r["to_state"] for r in await history.transitions("w1")]
            assert [str(s) for s in applied][-2:] == ["READY", "DEGRADED"]
    finally:
        await history.close()
