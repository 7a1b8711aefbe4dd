"""A late heartbeat older than one already handled never changes state, even when the newer one
was skipped by the consumers' cache and never reached the database (real Redis, both DBs)."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_flow import drained, register, send, wait_for


async def test_late_older_heartbeat_after_a_skipped_newer_one(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(consumers=1, consumer_block_ms=100)
    keys = Keys(settings.redis_prefix)
    async with api_client(settings, consumers=1) as client:
        token = await register(client, "dep-1", "deployment")

        async def state() -> str:
            resp = await client.get("/v1/workloads/dep-1")
            return str((await resp.json())["state"])

        assert (await send(client, "/v1/heartbeats", token, "dep-1", "DEGRADED", 47))[0] == 202
        await wait_for(lambda: _is(state, "DEGRADED"), what="DEGRADED applied")
        await wait_for(lambda: drained(redis, keys), what="seq 47 acked")
        # Same state, newer seq: the consumer skips it from the cache, no database round trip.
        assert (await send(client, "/v1/heartbeats", token, "dep-1", "DEGRADED", 51))[0] == 202
        await wait_for(lambda: drained(redis, keys), what="seq 51 acked")
        # Delivered late (the container's older request was slow): must not win over seq 51.
        assert (await send(client, "/v1/heartbeats", token, "dep-1", "READY", 49))[0] == 202
        await wait_for(lambda: drained(redis, keys), what="seq 49 handled")
        assert await state() == "DEGRADED"
        history = await (await client.get("/v1/workloads/dep-1/transitions")).json()
        assert [(t["to"], t["seq"]) for t in history["items"]] == [("DEGRADED", 47)]


async def _is(state: Callable[[], object], want: str) -> bool:
    return await state() == want  # type: ignore[misc]
