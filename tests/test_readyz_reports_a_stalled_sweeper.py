"""/readyz says when the sweeper has not finished a sweep for 3 intervals, but stays 200: ingest
must not be pulled out of the load balancer because the sweeper is down. Real Redis, both DBs."""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis

from statusd import selfwatch
from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client


async def test_a_stalled_sweeper_is_a_warning_not_a_503(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(sweep_interval=5)
    keys = Keys(settings.redis_prefix)
    async with api_client(settings) as client:
        resp = await client.get("/readyz")  # no sweep ever finished
        body = await resp.json()
        assert resp.status == 200, body
        assert body["checks"]["sweeper"] == "stalled: no sweep has finished yet"
        assert body["warnings"] == ["sweeper stalled: no sweep has finished yet"]

        await selfwatch.record_sweep_success(redis, keys, time.time() - 16)  # > 3 x 5 s ago
        body = await (await client.get("/readyz")).json()
        assert body["checks"]["sweeper"].startswith("stalled: last sweep finished 1")
        assert "more than 3 x 5s" in body["checks"]["sweeper"]
        assert len(body["warnings"]) == 1

        await selfwatch.record_sweep_success(redis, keys, time.time())
        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "ready"
        assert body["checks"] == {"redis": "ok", "database": "ok", "sweeper": "ok"}
        assert body["warnings"] == []
