"""An install upgraded from the one-hash-per-shard Redis layout (`{sN}:gen`, `{sN}:seq`,
per-workload `{sN}:st:<id>` keys, marker `{g}:liveness:built`) comes up right: the versioned
rebuild marker is missing, so recovery rebuilds as after a Redis data loss, writing the
generations into the bucketed layout and deleting the old per-shard hashes; then ingest's
generation check works again (an older generation's heartbeat is no sign of life, the current
one's is). Real Redis, the real ingest script, both databases."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from statusd import liveness
from statusd.ingest.validation import Heartbeat
from statusd.ingest.writer import StreamWriter
from statusd.lifecycle import Kind
from statusd.recovery import ensure_liveness
from statusd.registry import deregister, register
from statusd.runtime import Runtime, open_pools
from statusd.settings import Settings


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = await open_pools(settings)
    yield runtime
    await runtime.close()


async def test_old_layout_keys_are_rebuilt_into_the_new_one(rt: Runtime) -> None:
    redis, keys = rt.redis, rt.keys
    await register(rt.engine, "train-9", Kind.TRAINING)
    await deregister(rt.engine, "train-9")
    await register(rt.engine, "train-9", Kind.TRAINING)  # generation 2 now
    await register(rt.engine, "train-10", Kind.TRAINING)
    # What the previous release left in Redis for them.
    shard9, shard10 = keys.shard("train-9"), keys.shard("train-10")
    old_gen9, old_seq9 = keys.legacy_shard_hashes(shard9)
    await redis.hset(old_gen9, "train-9", "2")
    await redis.hset(old_seq9, "train-9", "41")
    await redis.hset(keys.legacy_shard_hashes(shard10)[0], "train-10", "1")
    old_cache = f"{keys.prefix}{{s{shard9}}}:st:train-9"
    await redis.hset(old_cache, mapping={"state": "RUNNING", "version": "3", "generation": "2"})
    await redis.expire(old_cache, 3600)
    await redis.set(keys.legacy_liveness_built, repr(time.time()))
    await redis.zadd(keys.pending_since(shard9), {"train-9": time.time()})
    await redis.zadd(keys.pending_since(shard10), {"train-10": time.time()})

    assert await ensure_liveness(rt), "the old layout must count as lost data"
    assert not await ensure_liveness(rt), "once rebuilt, it is whole"
    assert await liveness.registrations(redis, keys, ["train-9", "train-10"]) == [
        (2, None),
        (1, None),
    ]
    for shard in {shard9, shard10}:
        assert not await redis.exists(*keys.legacy_shard_hashes(shard))
    assert not await redis.exists(keys.legacy_liveness_built)
    assert await rt.cache.get_many(["train-9"]) == {}  # the old entry is not read: a miss

    writer = StreamWriter(redis, keys, shards=keys.shards, timeout=10)
    await writer.append([Heartbeat("train-9", "RUNNING", 500, None, 1)])  # the deleted one's
    assert await redis.zscore(keys.last_seen(shard9), "train-9") is None
    await writer.append([Heartbeat("train-9", "STARTING", 1, None, 2)])
    assert await redis.zscore(keys.last_seen(shard9), "train-9") is not None
    await writer.close()
