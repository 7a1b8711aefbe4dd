"""Entries delivered to a consumer that never saw them are applied in their order.

A partition between a `statusd consume` process and Redis can swallow the reply of a read that
Redis served, and a read the kernel retransmits after its consumer gave up on it runs later: the
entries are pending under that consumer's name, unseen, either the lease holder's (a) or one that
has since lost the lease ("gone"). The holder's next read (">") brings newer reports of the same
workloads. Applied first, those made the lost ones stale: the periodic take-over sweep brought them
back only for them to be dropped, and accepted changes were missing from the history (found by
the chaos runs, seeds 22 and 23).

The test makes that state without a partition: consumer A is frozen (SIGSTOP) once its blocking
read has returned, and the test reads the next reports under the reader's name, as the lost read
did, then sends newer ones and wakes A. Every workload must go READY -> DEGRADED -> READY.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from statusd.ingest.streams import ensure_groups, shard_streams
from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_flow import History, drained, register, send, start_consumer, wait_for
from tests.support.processes import stop_process

WORKLOADS = 12
BLOCK_MS = 100


@pytest.mark.parametrize("reader", ["a:0", "gone:0"])
async def test_reports_delivered_but_never_seen_are_applied_in_order(
    reader: str,
    make_settings: Callable[..., Settings],
    redis: Redis,
    tmp_path: Path,
    database_url: str,
) -> None:
    # The take-over sweep runs once per lease ttl: short, so that without the fix the lost
    # reports come back (and are dropped as stale) within seconds, not never.
    settings = make_settings(consumer_block_ms=BLOCK_MS, shard_lease_ms=6000)
    keys = Keys(settings.redis_prefix)
    streams = shard_streams(keys, settings.stream_shards)
    history = History(database_url)
    consumer = None
    try:
        async with api_client(settings, consumers=0) as client:
            toks = {
                f"d{i}": await register(client, f"d{i}", "deployment") for i in range(WORKLOADS)
            }
            await ensure_groups(redis, keys, settings.stream_shards)
            consumer = start_consumer(settings, "a", tmp_path)

            async def beat(status: str, seq: int) -> None:
                for wid, token in toks.items():
                    assert (await send(client, "/v1/heartbeats", token, wid, status, seq))[0] == 202

            await beat("READY", 1)

            async def all_ready() -> bool:
                assert consumer is not None and consumer.returncode is None, consumer.log_tail()
                states = await history.states()
                return all(states.get(w) == "READY" for w in toks)

            await wait_for(all_ready, timeout=60, what="consumer A applying READY")
            await wait_for(lambda: drained(redis, keys), timeout=30, what="READY acked")

            consumer.send(signal.SIGSTOP)
            # Its blocking read ends in Redis after BLOCK_MS; then no read of A's is waiting and
            # the next reports go to whoever reads next (checked below, not assumed).
            await asyncio.sleep(BLOCK_MS / 1000 * 5)
            await beat("DEGRADED", 2)
            lost = await redis.xreadgroup(
                keys.consumer_group, reader, {s: ">" for s in streams}, count=10 * WORKLOADS
            )
            assert sum(len(entries) for _, entries in lost) == WORKLOADS, lost
            await beat("READY", 3)
            consumer.send(signal.SIGCONT)

            await wait_for(lambda: drained(redis, keys), timeout=60, what="every report acked")
            rows = await history.transitions()
            for wid in toks:
                mine = [
                    (str(r["from_state"]), str(r["to_state"]))
                    for r in rows
                    if r["workload_id"] == wid
                ]
                assert mine == [
                    ("PENDING", "READY"),
                    ("READY", "DEGRADED"),
                    ("DEGRADED", "READY"),
                ], wid
            assert stop_process(consumer, signal.SIGTERM) == 0, consumer.log_tail()
    finally:
        if consumer is not None:
            consumer.send(signal.SIGCONT)
            consumer.kill_tree()
        await history.close()
