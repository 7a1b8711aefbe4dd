"""A `statusd consume` process SIGKILLed between reading and acking: another one takes over.

Two deterministic windows, no sleeps-and-hope:
- "blocked": consumer A reads entries while the test holds the database's write lock, so A cannot
  commit, hence cannot ack. The test sees the entries pending under A's name, kills A, releases
  the lock; once A's shard leases run out, consumer B acquires the shards, takes A's pending
  entries over (XAUTOCLAIM) before reading anything new, and applies them.
- "committed": consumer A runs with the test hook STATUSD_CONSUMER_PAUSE_BEFORE_ACK_S, so after
  its commit it sleeps before XACK. The test sees the transitions in the DB and the entries still
  pending, kills A; B takes them over and must apply nothing twice (the seq guard makes it a no-op).
Either way: every workload ends with exactly the expected transitions.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from statusd.ingest.streams import ensure_groups
from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_db_block import hold_write_lock
from tests.support.ingest_flow import (
    History,
    drained,
    pending_by_consumer,
    register,
    send,
    start_consumer,
    wait_for,
)
from tests.support.processes import ManagedProcess, stop_process

WORKLOADS = 20


async def pending_of(redis: Redis, keys: Keys, consumer: str) -> int:
    return (await pending_by_consumer(redis, keys)).get(consumer, 0)


@pytest.mark.parametrize("window", ["blocked", "committed"])
async def test_killed_consumer_entries_are_applied_once_by_another(
    window: str,
    make_settings: Callable[..., Settings],
    redis: Redis,
    tmp_path: Path,
    database_url: str,
) -> None:
    settings = make_settings(consumer_block_ms=100, shard_lease_ms=1500)
    keys = Keys(settings.redis_prefix)
    history = History(database_url)
    procs: list[ManagedProcess] = []
    try:
        async with api_client(settings, consumers=0) as client:
            toks = {f"w{i}": await register(client, f"w{i}", "training") for i in range(WORKLOADS)}
            await ensure_groups(redis, keys, settings.stream_shards)
            extra = {"STATUSD_CONSUMER_PAUSE_BEFORE_ACK_S": "300"} if window == "committed" else {}

            async def a_holds_all() -> bool:
                assert procs[0].returncode is None, procs[0].log_tail()
                return await pending_of(redis, keys, "a:0") == WORKLOADS

            if window == "blocked":
                async with hold_write_lock(database_url):
                    procs.append(start_consumer(settings, "a", tmp_path))
                    for wid, token in toks.items():
                        assert (await send(client, "/v1/heartbeats", token, wid, "RUNNING", 1))[
                            0
                        ] == 202
                    await wait_for(a_holds_all, timeout=60, what="consumer A holding every entry")
                    procs[0].kill_tree()  # SIGKILL while it waits for the lock: read, not acked
                assert await history.transitions() == []
            else:
                procs.append(start_consumer(settings, "a", tmp_path, **extra))
                for wid, token in toks.items():
                    assert (await send(client, "/v1/heartbeats", token, wid, "RUNNING", 1))[
                        0
                    ] == 202

                async def committed() -> bool:
                    return len(await history.transitions()) == WORKLOADS

                await wait_for(committed, timeout=60, what="consumer A's commits")
                await wait_for(a_holds_all, timeout=30, what="A's entries still unacked")
                procs[0].kill_tree()  # SIGKILL after the commit, before the ack

            procs.append(start_consumer(settings, "b", tmp_path))

            async def all_running() -> bool:
                states = await history.states()
                return all(states[w] == "RUNNING" for w in toks)

            # B takes A's entries over (per shard, before anything newer).
            await wait_for(all_running, timeout=90, what="consumer B applying A's entries")
            await wait_for(lambda: drained(redis, keys), timeout=60, what="A's entries acked by B")
            for wid, token in toks.items():  # and the flow goes on
                assert (await send(client, "/v1/heartbeats", token, wid, "STOPPING", 2))[0] == 202

            async def all_stopping() -> bool:
                states = await history.states()
                return all(states[w] == "STOPPING" for w in toks)

            await wait_for(all_stopping, timeout=90, what="consumer B applying everything")
            await wait_for(lambda: drained(redis, keys), timeout=60, what="everything acked")
            rows = await history.transitions()
            for wid in toks:
                mine = [(r["from_state"], r["to_state"]) for r in rows if r["workload_id"] == wid]
                assert [(str(a), str(b)) for a, b in mine] == [
                    ("PENDING", "RUNNING"),
                    ("RUNNING", "STOPPING"),
                ], wid
            assert stop_process(procs[1], signal.SIGTERM) == 0, procs[1].log_tail()
    finally:
        for proc in procs:
            proc.kill_tree()
        await history.close()
