"""Redis bytes per tracked workload (goal: <= 300 B), measured on a private redis-server.

Every workload goes through statusd's own Redis writes, as in steady state: registration
(pending set + generation), one heartbeat through the ingest script (last_seen, pending removed),
the consumer's seq record and the state-cache entry. The heartbeat streams are then deleted:
consumers ack and trim them, so they are not per-workload memory. Result: INFO used_memory
growth / workloads, and MEMORY USAGE summed per key family.

    .venv/bin/python bench/redis_bytes.py [--workloads 20000] [--shards 16]
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
from statusd.ingest.writer import StreamWriter
from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.redis_runtime import EmbeddedRedis
from statusd.state_cache import StateCache


async def measure(url: str, workloads: int, shards: int) -> None:
    redis = Redis.from_url(url)
    keys = Keys("statusd:", shards)
    ids = [f"train-{n:06d}-a1b2c3" for n in range(workloads)]
    await redis.flushall()
    before = int((await redis.info("memory"))["used_memory"])
    cache = StateCache(redis, keys)
    for wid in ids:
        await liveness.on_registered(redis, keys, wid, 1.7e9, generation=1)
    writer = StreamWriter(redis, keys, shards=shards, timeout=10)
    for start in range(0, workloads, 500):
        batch = [CheckedHeartbeat(w, "RUNNING", 7, None, 1) for w in ids[start : start + 500]]
        await writer.append(batch)
    await writer.close()
    registrations = liveness.Registrations(redis, keys)
    for start in range(0, workloads, 500):
        await registrations.raise_seqs({w: 7 for w in ids[start : start + 500]})
        entries = [(w, State.RUNNING, 3, 1, Kind.TRAINING, 7) for w in ids[start : start + 500]]
        await cache.store_many(entries)
    await redis.delete(*(keys.heartbeat_shard(s) for s in range(shards)))
    after = int((await redis.info("memory"))["used_memory"])
    families: dict[str, int] = defaultdict(int)
    encodings: dict[str, set[str]] = defaultdict(set)
    async for key in redis.scan_iter(count=1000):
        name = key.decode()
        family = name.split("}:", 1)[-1].split(":", 1)[0]
        families[family] += int(await redis.memory_usage(key, samples=0) or 0)
        encodings[family].add((await redis.object("encoding", key)).decode())
    print(f"workloads {workloads}, shards {shards}")
    print(f"used_memory growth: {after - before} B = {(after - before) / workloads:.0f} B/workload")
    for family, size in sorted(families.items(), key=lambda kv: -kv[1]):
        kinds = ",".join(sorted(encodings[family]))
        print(f"  {family:8s} {size / workloads:6.0f} B/workload (MEMORY USAGE), {kinds}")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp), appendonly=False)
        url = server.start()
        try:
            asyncio.run(measure(url, args.workloads, args.shards))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
