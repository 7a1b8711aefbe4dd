"""statusd-client's `hb.quiet()` against a real ingest: a quiet period longer than
STATUSD_MAX_QUIET_S is a 422 naming `quiet_for_s`, the client keeps its plain heartbeats going
(the workload stays heard), and one within the cap moves the workload's deadline in the
sweeper's index by exactly the period; the asyncio heartbeater too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from redis.asyncio import Redis
from statusd_client import AsyncHeartbeater, Heartbeater

from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client

MAX_QUIET_S = 5


async def eventually(check: Callable[[], object], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g}s")
        await asyncio.sleep(0.05)


async def test_over_the_cap_is_refused_and_heartbeats_go_on(
    make_settings: Callable[..., Settings], redis: Redis, redis_prefix: str
) -> None:
    settings = make_settings(max_quiet_s=MAX_QUIET_S, heartbeat_ttl=0.6)  # paced every 0.2 s
    keys = Keys(redis_prefix, shards=settings.stream_shards)
    async with api_client(settings) as client:
        made = await client.post("/v1/workloads", json={"id": "w-quiet", "kind": "training"})
        token = (await made.json())["heartbeat_token"]
        key = keys.last_seen(keys.shard("w-quiet"))

        async def score() -> float | None:
            return await redis.zscore(key, "w-quiet")

        hb = Heartbeater(
            str(client.make_url("")).rstrip("/"),
            "w-quiet",
            token,
            interval=0.1,
            handle_sigterm=False,
        ).start()
        try:
            hb.set("RUNNING")
            await eventually(lambda: score(), "the first heartbeat")
            hb.quiet(MAX_QUIET_S + 1, "a long restart")

            async def refused() -> bool:
                return hb.last_refusal is not None

            await eventually(refused, "the refusal")
            refusal = hb.last_refusal
            assert refusal is not None and refusal.code == 422, refusal
            assert refusal.error == "invalid_value" and "quiet_for_s" in refusal.message
            # Plain heartbeats go on after the refusal: the score keeps moving, never ahead.
            after = time.time()

            async def heard_again() -> bool:
                value = await score()
                return value is not None and value > after

            await eventually(heard_again, "heartbeats after the refusal")
            assert (await score() or 0) <= time.time()

            before = time.time()
            hb.quiet(MAX_QUIET_S, "a checkpoint")

            async def deadline_moved() -> bool:
                value = await score()
                return value is not None and value > time.time()

            await eventually(deadline_moved, "the quiet period stored")
            moved = await score() or 0
            assert before + MAX_QUIET_S <= moved <= time.time() + MAX_QUIET_S
            # set() speaks again: it ends the quiet period (the score is a plain "now" again).
            hb.set("RUNNING", "checkpoint written")

            async def ended() -> bool:
                value = await score()
                return value is not None and value < moved

            await eventually(ended, "the quiet period ended by set()")
        finally:
            await asyncio.to_thread(hb.close)


async def test_the_async_heartbeater_announces_a_quiet_period_too(
    make_settings: Callable[..., Settings], redis: Redis, redis_prefix: str
) -> None:
    settings = make_settings(max_quiet_s=MAX_QUIET_S, heartbeat_ttl=0.6)  # paced every 0.2 s
    keys = Keys(redis_prefix, shards=settings.stream_shards)
    async with api_client(settings) as client:
        made = await client.post("/v1/workloads", json={"id": "w-aquiet", "kind": "notebook"})
        token = (await made.json())["heartbeat_token"]
        key = keys.last_seen(keys.shard("w-aquiet"))

        async def deadline_moved() -> bool:
            value = await redis.zscore(key, "w-aquiet")
            return value is not None and value > time.time()

        url = str(client.make_url("")).rstrip("/")
        async with AsyncHeartbeater(
            url, "w-aquiet", token, interval=0.1, handle_sigterm=False
        ) as hb:
            hb.set("READY")
            before = time.time()
            hb.quiet(MAX_QUIET_S, "kernel restart")
            await eventually(deadline_moved, "the quiet period stored")
            moved = await redis.zscore(key, "w-aquiet") or 0
            assert before + MAX_QUIET_S <= moved <= time.time() + MAX_QUIET_S
