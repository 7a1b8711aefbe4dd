"""Shard handover: a `statusd consume` process holding every shard is SIGKILLed with a workload's
three changes read but unacked; once its leases run out, another process acquires the shards, takes
the pending entries over before reading anything new, and applies them in seq order: nothing lost,
nothing twice.

Deterministic window: the test holds the database's write lock, so consumer A reads the entries
(they show up pending under A's name) but cannot commit, hence cannot ack.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis

from statusd.ingest.streams import ensure_groups
from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_db_block import hold_write_lock
from tests.support.ingest_flow import (
    History,
    drained,
    lease_owners,
    pending_by_consumer,
    register,
    send,
    start_consumer,
    wait_for,
)
from tests.support.processes import ManagedProcess, stop_process

WORKLOADS = 12
CHANGES = ["STARTING", "RUNNING", "STOPPING"]  # seq 1, 2, 3
SHARDS = 4


async def test_a_killed_holders_pending_entries_are_applied_in_order_by_the_next(
    make_settings: Callable[..., Settings], redis: Redis, tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(consumer_block_ms=100, shard_lease_ms=1500, stream_shards=SHARDS)
    keys = Keys(settings.redis_prefix)
    history = History(database_url)
    procs: list[ManagedProcess] = []
    try:
        async with api_client(settings, consumers=0) as client:
            toks = {f"w{i}": await register(client, f"w{i}", "training") for i in range(WORKLOADS)}
            await ensure_groups(redis, keys, SHARDS)
            async with hold_write_lock(database_url):
                for seq, state in enumerate(CHANGES, start=1):
                    for wid, token in toks.items():
                        assert (await send(client, "/v1/heartbeats", token, wid, state, seq))[
                            0
                        ] == 202
                procs.append(start_consumer(settings, "a", tmp_path))

                async def a_holds_everything() -> bool:
                    assert procs[0].returncode is None, procs[0].log_tail()
                    pending = await pending_by_consumer(redis, keys, SHARDS)
                    return pending.get("a:0") == WORKLOADS * len(CHANGES)

                await wait_for(a_holds_everything, timeout=60, what="A holding every entry")
                owners = await lease_owners(redis, keys, SHARDS)
                assert owners == dict.fromkeys(range(SHARDS), "a:0")
                procs[0].kill_tree()  # SIGKILL: read, not committed, not acked
            assert await history.transitions() == []

            procs.append(start_consumer(settings, "b", tmp_path))

            async def b_applied_everything() -> bool:
                assert procs[1].returncode is None, procs[1].log_tail()
                states = await history.states()
                return all(states[w] == CHANGES[-1] for w in toks)

            await wait_for(b_applied_everything, timeout=90, what="B applying A's entries")
            await wait_for(lambda: drained(redis, keys, SHARDS), timeout=60, what="all acked")
            assert await lease_owners(redis, keys, SHARDS) == dict.fromkeys(range(SHARDS), "b:0")
            rows = await history.transitions()
            for wid in toks:
                mine = [r for r in rows if r["workload_id"] == wid]
                assert [(str(r["to_state"]), r["seq"]) for r in mine] == [
                    (state, seq) for seq, state in enumerate(CHANGES, start=1)
                ], wid
            assert len(rows) == WORKLOADS * len(CHANGES)
            assert stop_process(procs[1], signal.SIGTERM) == 0, procs[1].log_tail()
            assert await lease_owners(redis, keys, SHARDS) == {}  # released on a clean stop
    finally:
        for proc in procs:
            proc.kill_tree()
        await history.close()
