"""A consumer whose shard lease Redis handed on leaves the shard at its next read, not its renewal.

A Redis restarted empty (or a key expired there while its holder's deadline still held) lets a
second consumer SET the lease. Until the old holder's renewal, both would apply the shard, and a
workload's older report committed after a newer one is dropped as stale. Each read reads the
lease key in its round trip, so the old holder leaves at once.

The lease is 30 s, so renewals come every 10 s; the test needs none of them:
1. the consumer (in-process, like `statusd serve`) holds both shards and has applied STARTING;
2. the test SETs shard 0's lease to another name; the consumer logs `consumer.lease_gone` for
   shard 0 and its loop for the shard ends (a renewal would log no such event);
3. RUNNING for w0 (shard 0) and w1 (shard 1) are sent; w1's is applied, w0's is not;
4. the other name lets go; the consumer acquires shard 0 again at its next round and applies
   w0's RUNNING once, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from structlog.testing import capture_logs

from statusd.ingest.mount import CONSUMERS
from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_flow import (
    History,
    drained,
    lease_owners,
    register,
    send,
    wait_for,
    workloads_on_shards,
)

SHARDS = 2


async def test_a_consumer_leaves_a_shard_whose_lease_redis_handed_on(
    make_settings: Callable[..., Settings], redis: Redis, database_url: str
) -> None:
    settings = make_settings(consumer_block_ms=100, shard_lease_ms=30_000, stream_shards=SHARDS)
    keys = Keys(settings.redis_prefix)
    ids = workloads_on_shards(SHARDS, 1)
    w0, w1 = ids[0][0], ids[1][0]
    history = History(database_url)

    async def states_are(expected: dict[str, str]) -> bool:
        states = await history.states()
        return all(states.get(w) == s for w, s in expected.items())

    try:
        with capture_logs() as events:
            async with api_client(settings, consumers=1) as client:
                consumers = client.server.app[CONSUMERS]
                toks = {w: await register(client, w, "training") for w in (w0, w1)}
                for wid, token in toks.items():
                    assert (await send(client, "/v1/heartbeats", token, wid, "STARTING", 1))[
                        0
                    ] == 202
                await wait_for(
                    lambda: states_are({w0: "STARTING", w1: "STARTING"}), what="STARTING"
                )
                [name] = set(consumers.owned().values())
                assert set(consumers.owned()) == {0, 1}

                await redis.set(keys.shard_lease(0), "another-consumer/0", px=600_000)

                def gone(event: dict[str, Any]) -> bool:
                    return event["event"] == "consumer.lease_gone" and event["shard"] == 0

                async def left_shard0() -> bool:
                    return any(map(gone, events)) and 0 not in consumers.owned()

                await wait_for(left_shard0, timeout=30, what="consumer.lease_gone for shard 0")
                [event] = [e for e in events if gone(e)]
                assert event["holder"] == "another-consumer/0"
                assert event["consumer"] == name

                for wid, token in toks.items():
                    assert (await send(client, "/v1/heartbeats", token, wid, "RUNNING", 2))[
                        0
                    ] == 202
                await wait_for(lambda: states_are({w1: "RUNNING"}), timeout=30, what="w1 RUNNING")
                assert (await history.states())[w0] == "STARTING"  # not applied beside its holder

                await redis.delete(keys.shard_lease(0))
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
