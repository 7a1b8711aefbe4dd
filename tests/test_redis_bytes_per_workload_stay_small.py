"""Redis holds <= 300 B per tracked workload. At 1,000 and 20,000 workloads (16 shards) every
registration bucket (a workload's registration and cached state share one field) is a listpack
(the compact encoding Redis keeps for hashes of <= 128 short fields), and the keys statusd writes
per workload sum to <= 300 B by MEMORY USAGE:
sizes, not time. Each workload goes through statusd's own writes (registration, one heartbeat
through the ingest script, the consumers' seq record, the cache write-back); the heartbeat
streams are left out (consumers ack and trim them). Real Redis. bench/redis_bytes.py measures the
same at other sizes."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from statusd import liveness
from statusd.ingest.heartbeat_checks import CheckedHeartbeat
from statusd.ingest.writer import StreamWriter
from statusd.keys import DEFAULT_STREAM_SHARDS, Keys
from statusd.lifecycle import Kind, State
from statusd.state_cache import StateCache

CHUNK = 500
SEQ = 1_765_000_000_123_456_789  # a client's seq: nanoseconds since the epoch, 19 digits


@pytest.mark.slow
@pytest.mark.parametrize("workloads", [1_000, 20_000])
async def test_workloads_cost_at_most_300_bytes_each(
    redis: Redis, redis_prefix: str, workloads: int
) -> None:
    WORKLOADS = workloads  # noqa: N806  (the module constant it was)
    keys = Keys(redis_prefix, DEFAULT_STREAM_SHARDS)
    ids = [f"train-{n:06d}-a1b2c3" for n in range(WORKLOADS)]
    for wid in ids:
        await liveness.on_registered(redis, keys, wid, 1.7e9, generation=1)
    writer = StreamWriter(redis, keys, shards=keys.shards, timeout=30)
    registrations = liveness.Registrations(redis, keys)
    cache = StateCache(redis, keys)
    for start in range(0, WORKLOADS, CHUNK):
        part = ids[start : start + CHUNK]
        await writer.append([CheckedHeartbeat(w, "RUNNING", SEQ, None, 1) for w in part])
        await registrations.raise_seqs({w: SEQ for w in part})
        await cache.store_many([(w, State.RUNNING, 3, 1, Kind.TRAINING, SEQ) for w in part])
    await writer.close()
    await redis.delete(*(keys.heartbeat_shard(s) for s in range(keys.shards)))

    names = [key async for key in redis.scan_iter(match=f"{redis_prefix}*", count=1000)]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name, samples=0)
            pipe.object("encoding", name)
        replies = await pipe.execute()
    sizes = dict(zip(names, replies[0::2], strict=True))
    encodings = {
        name.decode(): enc.decode() for name, enc in zip(names, replies[1::2], strict=True)
    }

    buckets = {name: enc for name, enc in encodings.items() if ":reg:" in name}
    if WORKLOADS >= 20_000:  # these ids leave no bucket empty
        assert len(buckets) == keys.shards * keys.buckets  # every bucket holds a few
    assert {enc for enc in buckets.values()} == {"listpack"}
    # The workload's own data, whatever the layout names it (only the streams were deleted).
    per_workload = sum(int(size) for size in sizes.values()) / WORKLOADS
    assert per_workload <= 300, f"{per_workload:.0f} B per workload"
    # Every workload really is in there: live cache entries, seqs, last-seen.
    assert len(await cache.get_many(ids[:CHUNK])) == CHUNK
    assert await liveness.seqs(redis, keys, ids[:3]) == [SEQ, SEQ, SEQ]
    assert sum(await liveness.tracked(redis, keys)) == WORKLOADS
