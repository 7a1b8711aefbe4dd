"""Heartbeats through ingest and in-process consumers change state, visibly through the API.

Real Redis, real consumers (inside the app, like `statusd serve`), SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from statusd import liveness
from statusd.ingest.stream_dead_letters import list_dead_letters, replay
from statusd.keys import Keys
from statusd.settings import Settings
from tests.conftest import settings_env
from tests.support.api_client import api_client
from tests.support.ingest_flow import SHARDS, drained, register, send, shard_stream, wait_for
from tests.support.processes import statusd_command

POISON = {"workload_id": "live", "generation": "1", "status": "RUNNING", "seq": "not-a-number"}
PATHS = {
    "training": ["STARTING", "RUNNING", "STOPPING", "SUCCEEDED"],
    "notebook": ["STARTING", "READY", "IDLE", "READY", "STOPPING", "STOPPED"],
    "deployment": ["DEPLOYING", "READY", "DEGRADED", "READY", "STOPPING", "FAILED"],
}


async def api_history(
    client: TestClient[Any, Any], wid: str
) -> list[tuple[str, str, str, int | None]]:
    resp = await client.get(f"/v1/workloads/{wid}/transitions")
    assert resp.status == 200, await resp.text()
    return [(t["from"], t["to"], t["source"], t.get("seq")) for t in (await resp.json())["items"]]


async def api_state(client: TestClient[Any, Any], wid: str) -> str:
    resp = await client.get(f"/v1/workloads/{wid}")
    return str((await resp.json())["state"])


async def test_each_kind_walks_its_lifecycle_by_heartbeats(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """All heartbeats are sent at once (repeats included); every change is applied once, in order."""
    settings = make_settings(consumers=2, consumer_block_ms=100)
    keys = Keys(settings.redis_prefix)
    async with api_client(settings, consumers=2) as client:
        seqs: dict[str, int] = {}
        for kind, path in PATHS.items():
            wid = f"{kind}-1"
            token = await register(client, wid, kind)
            seq = 0
            for state in path:
                for _ in range(3):  # steady heartbeats between changes
                    seq += 1
                    status, doc = await send(
                        client, "/v1/heartbeats", token, wid, state, seq, detail=f"{state} #{seq}"
                    )
                    assert status == 202, doc
            seqs[wid] = seq

        async def all_final() -> bool:
            return all([await api_state(client, f"{k}-1") == p[-1] for k, p in PATHS.items()])

        await wait_for(all_final, timeout=60, what="every kind in its final state")
        await wait_for(lambda: drained(redis, keys), timeout=30, what="stream drained")
        for kind, path in PATHS.items():
            history = await api_history(client, f"{kind}-1")
            assert [(f, t) for f, t, _, _ in history] == list(
                zip(["PENDING", *path[:-1]], path, strict=True)
            )
            assert {source for _, _, source, _ in history} == {"push"}
            got_seqs = [s for *_, s in history]
            assert got_seqs == sorted(got_seqs)  # applied in seq order
        assert await liveness.seqs(redis, keys, ["training-1"]) == [seqs["training-1"]]


async def test_batch_items_apply_and_bad_ones_do_not(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(consumer_block_ms=100)
    async with api_client(settings, consumers=1) as client:
        toks = {w: await register(client, w, "deployment") for w in ("d1", "d2", "d3")}
        items = [
            {"token": toks["d1"], "workload_id": "d1", "status": "READY", "seq": 1},
            {
                "token": toks["d2"],
                "workload_id": "d2",
                "status": "DEGRADED",
                "seq": 1,
                "detail": "gpu0 hot",
            },
            {"token": toks["d1"], "workload_id": "d3", "status": "FAILED", "seq": 1},  # 403
            {
                "token": toks["d3"],
                "workload_id": "d3",
                "status": "RUNNING",
                "seq": 1,
            },  # 422: not a deployment state
        ]
        resp = await client.post(
            "/v1/heartbeats:batch", json={"items": items}, headers={"Authorization": ""}
        )
        assert [r["status"] for r in (await resp.json())["results"]] == [202, 202, 403, 422]

        async def applied() -> bool:
            return (
                await api_state(client, "d1") == "READY"
                and await api_state(client, "d2") == "DEGRADED"
            )

        await wait_for(applied, what="batch applied")
        await wait_for(lambda: drained(redis, Keys(settings.redis_prefix)), what="drained")
        assert await api_state(client, "d3") == "PENDING"
        assert await api_history(client, "d2") == [("PENDING", "DEGRADED", "push", 1)]


async def test_deregistered_workload_is_dropped_and_poison_goes_to_dead_letters(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """A heartbeat for a deleted workload is acked and dropped; an entry nobody can read is
    dead-lettered with its error; the rest of its shard flows on."""
    settings = make_settings(consumer_block_ms=100, max_deliveries=2)
    keys = Keys(settings.redis_prefix)
    async with api_client(settings, consumers=2) as client:
        gone = await register(client, "gone", "training")
        live = await register(client, "live", "training")
        assert (await client.delete("/v1/workloads/gone")).status in (200, 204)
        poison_id = await redis.xadd(shard_stream(keys, "live"), POISON)
        assert (await send(client, "/v1/heartbeats", gone, "gone", "RUNNING", 1))[0] == 202
        assert (await send(client, "/v1/heartbeats", live, "live", "RUNNING", 1))[0] == 202

        async def live_running() -> bool:
            return await api_state(client, "live") == "RUNNING"

        await wait_for(live_running, what="the entries behind the poison applied")

        async def buried() -> bool:
            return await redis.xlen(keys.dead_letters) == 1

        await wait_for(buried, timeout=60, what="poison entry in the dead-letter stream")
        await wait_for(lambda: drained(redis, keys), what="nothing left pending")
        [letter] = await list_dead_letters(redis, keys)
        assert letter.original_id == poison_id.decode()
        assert "field 'seq'" in letter.error
        assert letter.deliveries >= 1  # unreadable: no retry can help
        assert letter.fields == POISON
        assert (await send(client, "/v1/heartbeats", live, "live", "STOPPING", 2))[0] == 202
        await wait_for(
            lambda: _state_is(client, "live", "STOPPING"), what="flow continues after burial"
        )

        # The operator's view, through the CLI, then a replay (it fails again: back to dead letters).
        listing = await asyncio.to_thread(
            subprocess.run,
            [*statusd_command(), "dead-letters", "list", "--json"],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listing.returncode == 0, listing.stderr
        [row] = [orjson.loads(line) for line in listing.stdout.splitlines()]
        assert row["original_id"] == poison_id.decode() and row["fields"] == POISON
        new_ids = await replay(redis, keys, shards=SHARDS)
        assert len(new_ids) == 1

        async def buried_again() -> bool:
            return [d.original_id for d in await list_dead_letters(redis, keys)] == new_ids

        await wait_for(buried_again, timeout=60, what="replayed poison buried again")


async def test_an_entry_that_fails_to_apply_is_retried_then_dead_lettered(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """A readable entry the database refuses (seq beyond BIGINT) is tried max_deliveries times,
    then dead-lettered; the workload's and the shard's other reports are applied."""
    settings = make_settings(consumer_block_ms=100, max_deliveries=3)
    keys = Keys(settings.redis_prefix)
    async with api_client(settings, consumers=1) as client:
        token = await register(client, "bad", "training")
        assert (await send(client, "/v1/heartbeats", token, "bad", "STARTING", 1))[0] == 202
        poison = {"workload_id": "bad", "generation": "1", "status": "RUNNING", "seq": str(2**70)}
        poison_id = await redis.xadd(shard_stream(keys, "bad"), poison)

        async def buried() -> bool:
            return await redis.xlen(keys.dead_letters) == 1

        await wait_for(buried, timeout=60, what="failing entry in the dead-letter stream")
        [letter] = await list_dead_letters(redis, keys)
        assert letter.original_id == poison_id.decode() and letter.deliveries == 3
        assert letter.fields == poison
        assert (await send(client, "/v1/heartbeats", token, "bad", "RUNNING", 2))[0] == 202
        await wait_for(lambda: _state_is(client, "bad", "RUNNING"), what="flow continues")
        await wait_for(lambda: drained(redis, keys), what="nothing left pending")
        assert [(f, t) for f, t, _, _ in await api_history(client, "bad")] == [
            ("PENDING", "STARTING"),
            ("STARTING", "RUNNING"),
        ]


async def _state_is(client: TestClient[Any, Any], wid: str, state: str) -> bool:
    return await api_state(client, wid) == state
