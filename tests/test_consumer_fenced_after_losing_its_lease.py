"""Fencing: a consumer whose shard lease is taken commits nothing more for that shard.

Deterministic order of events, no sleeps:
1. the consumer (in-process, like `statusd serve`) holds both shards and has applied STARTING;
2. the database goes down; RUNNING for w0 (shard 0) is read and retried (pending, not committed);
3. the test overwrites shard 0's lease (another owner now); the test waits until the consumer's
   loop for shard 0 is gone (it notices at its next renewal and abandons the batch in hand);
4. the database comes back; RUNNING for w1 (shard 1, still held) is applied, while w0's RUNNING is
   still uncommitted and pending: the fenced consumer did not commit it;
5. the test lets go of the lease; the consumer acquires shard 0 again, takes its own pending entry
   over and applies it, once.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from statusd.app_keys import RUNTIME
from statusd.ingest.mount import CONSUMERS
from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_db_block import database_down
from tests.support.ingest_flow import (
    History,
    drained,
    lease_owners,
    pending_by_consumer,
    register,
    send,
    wait_for,
    workloads_on_shards,
)

SHARDS = 2


async def test_a_consumer_that_lost_its_lease_commits_nothing_more_for_that_shard(
    make_settings: Callable[..., Settings], redis: Redis, database_url: str
) -> None:
    settings = make_settings(consumer_block_ms=100, shard_lease_ms=1500, stream_shards=SHARDS)
    keys = Keys(settings.redis_prefix)
    ids = workloads_on_shards(SHARDS, 1)
    w0, w1 = ids[0][0], ids[1][0]
    history = History(database_url)
    try:
        async with api_client(settings, consumers=1) as client:
            consumers = client.server.app[CONSUMERS]
            toks = {w: await register(client, w, "training") for w in (w0, w1)}

            async def states_are(expected: dict[str, str]) -> bool:
                states = await history.states()
                return all(states[w] == s for w, s in expected.items())

            for wid, token in toks.items():
                assert (await send(client, "/v1/heartbeats", token, wid, "STARTING", 1))[0] == 202
            await wait_for(lambda: states_are({w0: "STARTING", w1: "STARTING"}), what="STARTING")
            [name] = set(consumers.owned().values())
            assert set(consumers.owned()) == {0, 1}

            engine = client.server.app[RUNTIME].engine
            async with database_down(database_url, sqlite_engines=[engine]):
                assert (await send(client, "/v1/heartbeats", toks[w0], w0, "RUNNING", 2))[0] == 202

                async def in_hand() -> bool:
                    return (await pending_by_consumer(redis, keys, SHARDS)).get(name) == 1

                await wait_for(in_hand, what="w0's RUNNING read and retried")
                await redis.set(keys.shard_lease(0), "thief/1", px=600_000)

                async def shard0_left() -> bool:
                    return 0 not in consumers.owned()

                await wait_for(shard0_left, timeout=30, what="the loop for shard 0 gone")
                assert 1 in consumers.owned()

            assert (await send(client, "/v1/heartbeats", toks[w1], w1, "RUNNING", 2))[0] == 202
            await wait_for(lambda: states_are({w1: "RUNNING"}), timeout=60, what="w1 RUNNING")
            # The database is back and the consumer works, yet w0's RUNNING stays uncommitted.
            assert [str(r["to_state"]) for r in await history.transitions(w0)] == ["STARTING"]
            assert (await pending_by_consumer(redis, keys, SHARDS)).get(name) == 1
            assert 0 not in consumers.owned()

            await redis.delete(keys.shard_lease(0))  # the "thief" is gone: shard 0 is free again
            await wait_for(lambda: states_are({w0: "RUNNING"}), timeout=60, what="w0 RUNNING")
            await wait_for(lambda: drained(redis, keys, SHARDS), what="everything acked")
            assert await lease_owners(redis, keys, SHARDS) == {0: name, 1: name}
            for wid in (w0, w1):
                assert [(str(r["to_state"]), r["seq"]) for r in await history.transitions(wid)] == [
                    ("STARTING", 1),
                    ("RUNNING", 2),
                ]
    finally:
        await history.close()
