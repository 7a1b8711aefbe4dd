"""One group-commit flush spans every shard: each heartbeat lands in its own shard's stream, in
order, and is a sign of life, while a single Redis gets as few script calls as the per-call bound
allows (one call per shard, as Redis Cluster needs, cost ~11% of ingest's CPU). Real Redis; the
call count is read from the server's own command statistics."""

from __future__ import annotations

from collections import Counter

from redis.asyncio import Redis

from statusd.ingest.heartbeat_checks import CheckedHeartbeat
from statusd.ingest.writer import SCRIPT_CHUNK, StreamWriter
from statusd.keys import Keys

SHARDS = 16
WORKLOADS = 300
BEATS_EACH = 8  # 2,400 heartbeats in one flush: more than two calls' worth


async def script_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_one_flush_over_every_shard_stores_each_heartbeat_in_its_shard(
    redis: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix, SHARDS)
    writer = StreamWriter(redis, keys, shards=SHARDS, timeout=10.0)
    ids = [f"w-{i:04d}" for i in range(WORKLOADS)]
    beats = [
        CheckedHeartbeat(workload_id=wid, status="RUNNING", seq=seq, detail=None, generation=1)
        for seq in range(1, BEATS_EACH + 1)
        for wid in ids
    ]
    await writer.append(beats[:1])  # loads the script: the count below is the flush alone
    before = await script_calls(redis)

    await writer.append(beats)
    calls = await script_calls(redis) - before
    await writer.close()

    per_shard = Counter(keys.shard(wid) for wid in ids)
    assert len(per_shard) == SHARDS  # the flush really spans every shard
    # Greedy packing of whole shard parts under SCRIPT_CHUNK: far fewer calls than shards.
    assert -(-len(beats) // SCRIPT_CHUNK) <= calls < SHARDS, calls
    for shard, workloads in per_shard.items():
        entries = await redis.xrange(keys.heartbeat_shard(shard))
        wanted = workloads * BEATS_EACH + sum(
            1 for wid in ids[:1] if keys.shard(wid) == shard
        )  # + the script-loading heartbeat
        assert len(entries) == wanted, (shard, len(entries), wanted)
        # Within a shard, each workload's heartbeats are in seq order (consumers rely on it).
        last: dict[bytes, int] = {}
        for _, fields in entries:
            wid, seq = fields[b"workload_id"], int(fields[b"seq"])
            assert keys.shard(wid.decode()) == shard
            assert seq >= last.get(wid, 0), (wid, seq)
            last[wid] = seq
        seen = await redis.zrange(keys.last_seen(shard), 0, -1)
        assert sorted(s.decode() for s in seen) == sorted(
            wid for wid in ids if keys.shard(wid) == shard
        )
