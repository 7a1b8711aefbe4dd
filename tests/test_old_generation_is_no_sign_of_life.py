"""A heartbeat signed for an earlier generation (the token of a deleted registration) is no sign of
life: it sets no `last_seen`, no `last_seq`, and leaves the new registration's PENDING clock alone.

Real Redis, the real ingest script and in-app consumers, SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from statusd import liveness
from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_flow import drained, register, send, wait_for


async def test_a_deleted_registrations_token_keeps_nobody_alive(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(consumers=1, consumer_block_ms=100)
    keys = Keys(settings.redis_prefix)
    async with api_client(settings, consumers=1) as client:
        old_token = await register(client, "train-7", "training")
        assert (await client.delete("/v1/workloads/train-7")).status == 200
        new_token = await register(client, "train-7", "training")
        clock = await redis.zscore(keys.pending_since(keys.shard("train-7")), "train-7")
        assert clock is not None

        # The old container keeps talking, with seqs far above anything the new one will send.
        for seq in (500, 501):
            status, body = await send(
                client, "/v1/heartbeats", old_token, "train-7", "RUNNING", seq
            )
            assert status == 202, body
        await wait_for(lambda: drained(redis, keys), what="the old heartbeats consumed")

        shown = await (await client.get("/v1/workloads/train-7")).json()
        assert (shown["generation"], shown["state"]) == (2, "PENDING")
        assert shown["last_seen_at"] is None
        assert shown["last_seq"] is None
        assert await redis.zscore(keys.last_seen(keys.shard("train-7")), "train-7") is None
        assert await liveness.seqs(redis, keys, ["train-7"]) == [None]
        assert await redis.zscore(keys.pending_since(keys.shard("train-7")), "train-7") == clock

        # The current generation's first heartbeat is a sign of life and ends the PENDING clock.
        status, body = await send(client, "/v1/heartbeats", new_token, "train-7", "STARTING", 1)
        assert status == 202, body
        await wait_for(lambda: drained(redis, keys), what="the new heartbeat consumed")
        shown = await (await client.get("/v1/workloads/train-7")).json()
        assert (shown["state"], shown["last_seq"]) == ("STARTING", 1)
        assert shown["last_seen_at"] is not None
        assert await redis.zscore(keys.pending_since(keys.shard("train-7")), "train-7") is None
