"""Batch registrations in flight together leave the Redis pool to ingest and the consumers.

A batch registration records its liveness as one MULTI per stream shard; each MULTI in flight
holds a pooled connection. Sent all at once, four batches of 500 (the fleet simulator's and a
backend's usual fan-out) needed 4 x 16 connections: the whole default pool, and the exhausted
pool raised MaxConnectionsError, answered 503 redis_unavailable for every item. Here four batches
register together on a pool of 24 connections (room for 4 x SHARD_MULTIS_IN_FLIGHT and the rest
of a process's users) and every id is tracked. Real Redis."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.liveness import SHARD_MULTIS_IN_FLIGHT, on_registered_many
from statusd.redis_runtime import create_redis

BATCHES = 4
PER_BATCH = 500
POOL = 24


async def test_four_batches_in_flight_fit_a_small_pool(
    redis_server: str, redis_prefix: str, redis: Redis
) -> None:
    keys = Keys(prefix=redis_prefix)
    assert BATCHES * SHARD_MULTIS_IN_FLIGHT < POOL < BATCHES * keys.shards
    client = create_redis(redis_server, POOL)
    batches = [{f"b{b}-w{i}": 1 for i in range(PER_BATCH)} for b in range(BATCHES)]
    try:
        await asyncio.gather(
            *(on_registered_many(client, keys, batch, time.time()) for batch in batches)
        )
    finally:
        await client.aclose()
    tracked = 0
    for shard in range(keys.shards):
        tracked += await redis.zcard(keys.pending_since(shard))
    assert tracked == BATCHES * PER_BATCH
