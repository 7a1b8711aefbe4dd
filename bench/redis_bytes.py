"""Redis bytes per tracked workload (goal: <= 300 B from 1,000 workloads up), on a private
redis-server per size, fixed costs included.

Every workload goes through statusd's own Redis writes, as in steady state: the consumer groups
(ensure_groups), registration in batches (`on_registered_many`: pending set + generation), one
heartbeat each through the ingest script (`StreamWriter`: stream entry, last_seen, pending
removed), then what a consumer does with it: XREADGROUP, the registration's seq raise and the
state-cache entry, XACK, and its housekeeping's trim (`trim_stream`: MINID, approximate, so up to
one stream node per shard stays). Nothing is deleted by hand.

Reported per size: `used_memory` growth from the empty, warmed server (see `measure`) to the
end, divided by N, each read from a fresh connection with the others closed; the keyspace's
table; and MEMORY USAGE summed per key family (which leaves out allocator rounding).

    .venv/bin/python bench/redis_bytes.py [--workloads 1000 10000 200000] [--shards 16]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections import defaultdict
from pathlib import Path

from redis.asyncio import Redis

from statusd import liveness
from statusd.ingest.heartbeat_checks import CheckedHeartbeat
from statusd.ingest.housekeeping import trim_stream
from statusd.ingest.streams import ensure_groups
from statusd.ingest.writer import StreamWriter
from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.redis_runtime import EmbeddedRedis
from statusd.state_cache import StateCache

CHUNK = 500
# Heartbeats carry the client's seq: nanoseconds since the epoch (statusd_client.seq), 19 digits.
SEQ = 1_765_000_000_123_456_789


async def memory(url: str) -> int:
    """used_memory seen from a fresh connection, every other one closed: each connection's query
    and reply buffers come and go with its requests, not with the workloads."""
    redis = Redis.from_url(url)
    try:
        return int((await redis.info("memory"))["used_memory"])
    finally:
        await redis.aclose()


async def consume(redis: Redis, keys: Keys, shard: int, cache: StateCache) -> int:
    """One consumer's pass over a shard: read everything, record it, ack, trim."""
    stream, group = keys.heartbeat_shard(shard), keys.consumer_group
    registrations = liveness.Registrations(redis, keys)
    handled = 0
    while True:
        reply = await redis.xreadgroup(group, "bench", {stream: ">"}, count=CHUNK)
        entries = reply[0][1] if reply else []
        if not entries:
            break
        seqs = {e[b"workload_id"].decode(): int(e[b"seq"]) for _, e in entries}
        await registrations.raise_seqs(seqs)
        await cache.store_many(
            [(w, State.RUNNING, 3, 1, Kind.TRAINING, s) for w, s in seqs.items()]
        )
        await redis.xack(stream, group, *(entry_id for entry_id, _ in entries))
        handled += len(entries)
    await trim_stream(redis, group, stream)
    return handled


async def fill(redis: Redis, keys: Keys, ids: list[str]) -> None:
    """Register `ids`, one heartbeat each through ingest, consumed, acked and trimmed."""
    workloads, shards = len(ids), keys.shards
    await ensure_groups(redis, keys, shards)
    cache = StateCache(redis, keys)
    for start in range(0, workloads, CHUNK):
        await liveness.on_registered_many(
            redis, keys, dict.fromkeys(ids[start : start + CHUNK], 1), 1.7e9
        )
    writer = StreamWriter(redis, keys, shards=shards, timeout=10)
    for start in range(0, workloads, CHUNK):
        part = ids[start : start + CHUNK]
        batch = [CheckedHeartbeat(w, "RUNNING", SEQ + n, None, 1) for n, w in enumerate(part)]
        await writer.append(batch)
    await writer.close()
    handled = sum([await consume(redis, keys, shard, cache) for shard in range(shards)])
    assert handled == workloads, (handled, workloads)


async def measure(url: str, workloads: int, shards: int) -> dict[str, float]:
    keys = Keys("statusd:", shards)
    ids = [f"train-{n:06d}-a1b2c3" for n in range(workloads)]
    cold = await memory(url)
    # Warm-up: the same path for 1,000 other workloads, then FLUSHALL. Redis keeps some memory
    # that the first traffic allocates and FLUSHALL does not give back (~0.5 MB here, whatever
    # the fleet's size: the scripting engine's client and caches); that is the server's, not
    # the workloads', so `before` is taken after it; the cold figure is printed beside it.
    redis = Redis.from_url(url)
    await fill(redis, Keys("warmup:", shards), [f"w-{n:06d}" for n in range(1000)])
    await redis.flushall()
    await redis.aclose()
    before = await memory(url)
    redis = Redis.from_url(url)
    await fill(redis, keys, ids)
    await redis.aclose()
    after = await memory(url)
    redis = Redis.from_url(url)
    families: dict[str, int] = defaultdict(int)
    encodings: dict[str, set[str]] = defaultdict(set)
    key_count: dict[str, int] = defaultdict(int)
    async for key in redis.scan_iter(count=1000):
        name = key.decode()
        family = name.split("}:", 1)[-1].split(":", 1)[0]
        families[family] += int(await redis.memory_usage(key, samples=0) or 0)
        encodings[family].add((await redis.object("encoding", key)).decode())
        key_count[family] += 1
    table = (await redis.memory_stats())["db.0"]["overhead.hashtable.main"]
    await redis.aclose()
    growth, cold_growth = (after - before) / workloads, (after - cold) / workloads
    print(f"workloads {workloads:,}, shards {shards}")
    print(
        f"  used_memory growth {growth:.0f} B/workload ({after - before:,} B); "
        f"from the cold server (no warm-up) {cold_growth:.0f} B/workload"
    )
    print(f"  keyspace table {table / workloads:6.0f} B/workload")
    for family, size in sorted(families.items(), key=lambda kv: -kv[1]):
        kinds = ",".join(sorted(encodings[family]))
        print(
            f"  {family:8s} {size / workloads:6.0f} B/workload (MEMORY USAGE), "
            f"{key_count[family]:,} keys, {kinds}"
        )
    return {"growth": growth, "cold": cold_growth}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", type=int, nargs="+", default=[1_000, 10_000, 200_000])
    parser.add_argument("--shards", type=int, default=16)
    args = parser.parse_args()
    for workloads in args.workloads:
        with tempfile.TemporaryDirectory() as tmp:
            server = EmbeddedRedis(Path(tmp), appendonly=False)
            url = server.start()
            try:
                asyncio.run(measure(url, workloads, args.shards))
            finally:
                server.stop()


if __name__ == "__main__":
    main()
