"""Balance: a second consumer process gets its share of the shards promptly; neither starves.

Consumer A starts alone and takes every shard; when B starts, A releases the shards over its
share (ceil(shards / live consumers)) after their batch in hand and B acquires them. Heartbeats
sent meanwhile are all applied, once. When A stops cleanly, B takes every shard.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from statusd.ingest.streams import ensure_groups
from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_flow import (
    History,
    drained,
    lease_owners,
    register,
    send,
    start_consumer,
    wait_for,
)
from tests.support.processes import ManagedProcess, stop_process

SHARDS = 8
WORKLOADS = 40


async def test_two_consumer_processes_share_the_shards(
    make_settings: Callable[..., Settings], redis: Redis, tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(consumer_block_ms=100, shard_lease_ms=1500, stream_shards=SHARDS)
    keys = Keys(settings.redis_prefix)
    history = History(database_url)
    procs: list[ManagedProcess] = []

    def owned_by(counts: dict[str, int]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            for proc in procs:
                assert proc.returncode is None, proc.log_tail()
            return Counter((await lease_owners(redis, keys, SHARDS)).values()) == counts

        return check

    try:
        async with api_client(settings, consumers=0) as client:
            toks = {f"w{i}": await register(client, f"w{i}", "training") for i in range(WORKLOADS)}
            await ensure_groups(redis, keys, SHARDS)
            procs.append(start_consumer(settings, "a", tmp_path))
            await wait_for(owned_by({"a:0": SHARDS}), timeout=60, what="A holding every shard")
            procs.append(start_consumer(settings, "b", tmp_path))
            for wid, token in toks.items():  # in flight while the shards change hands
                assert (await send(client, "/v1/heartbeats", token, wid, "RUNNING", 1))[0] == 202
            half = SHARDS // 2
            await wait_for(owned_by({"a:0": half, "b:0": half}), timeout=60, what="4 + 4 shards")
            for wid, token in toks.items():
                assert (await send(client, "/v1/heartbeats", token, wid, "STOPPING", 2))[0] == 202

            async def all_stopping() -> bool:
                return set((await history.states()).values()) == {"STOPPING"}

            await wait_for(all_stopping, timeout=60, what="every workload STOPPING")
            await wait_for(lambda: drained(redis, keys, SHARDS), what="everything acked")
            rows = await history.transitions()
            assert sorted((r["workload_id"], str(r["to_state"])) for r in rows) == sorted(
                (w, s) for w in toks for s in ("RUNNING", "STOPPING")
            )

            assert stop_process(procs[0], signal.SIGTERM) == 0, procs[0].log_tail()
            procs.pop(0)
            await wait_for(owned_by({"b:0": SHARDS}), timeout=60, what="B holding every shard")
            assert stop_process(procs[0], signal.SIGTERM) == 0, procs[0].log_tail()
    finally:
        for proc in procs:
            proc.kill_tree()
        await history.close()
