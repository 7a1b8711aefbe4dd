"""State-cache entries live in bucket hashes, whose fields have no TTL: the expiry travels in the
value. An expired entry is a miss, exactly like the missing key of the per-workload layout; an
expired tombstone no longer blocks an older store; pruning deletes expired entries, nothing live.
Lifetimes of 0 s make "past its expiry" immediate (no sleeping). Real Redis."""

from __future__ import annotations

from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.state_cache import StateCache


async def test_an_entry_past_its_expiry_is_a_miss_for_reader_and_writers(
    redis: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    expired = StateCache(redis, keys, ttl_s=0)
    await expired.store("t1", State.RUNNING, 3, 1, Kind.TRAINING, seq=5)
    assert await redis.hget(keys.state_cache_of("t1"), "t1") is not None  # there, but expired
    assert await expired.get_many(["t1"]) == {}
    # Writers treat it as absent too: a seq bump or a refusal does not bring it back.
    await expired.bump_seqs({"t1": (1, 9)})
    await expired.mark_refused("t1", 3, "STARTING")
    assert await expired.get_many(["t1"]) == {}
    # ... and a store at an OLDER version takes its place (an expired entry proves nothing).
    live = StateCache(redis, keys)
    await live.store("t1", State.STARTING, 2, 1, Kind.TRAINING)
    got = (await live.get_many(["t1"]))["t1"]
    assert (got.state, got.version, got.seq, got.refused) == (State.STARTING, 2, None, frozenset())


async def test_an_expired_tombstone_no_longer_blocks_an_older_store(
    redis: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    cache = StateCache(redis, keys)
    await cache.invalidate("n1", 4)
    await cache.store("n1", State.READY, 3, 1, Kind.NOTEBOOK)
    assert await cache.get_many(["n1"]) == {}, "a live tombstone blocks the older store"

    short = StateCache(redis, keys, tombstone_ttl_s=0)  # the commit never stored: rolled back
    await short.invalidate("n2", 4)
    await short.store("n2", State.READY, 3, 1, Kind.NOTEBOOK)
    assert (await short.get_many(["n2"]))["n2"].state is State.READY


async def test_pruning_removes_expired_entries_and_nothing_live(
    redis: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix, shards=2)  # 2,048 buckets per shard: prune them all at once
    live = StateCache(redis, keys)
    expired = StateCache(redis, keys, ttl_s=0, tombstone_ttl_s=0)
    ids = [f"w{n}" for n in range(400)]
    for wid in ids[:200]:
        await live.store(wid, State.RUNNING, 1, 1, Kind.TRAINING)
    await live.invalidate_many({wid: 2 for wid in ids[200:250]})  # live tombstones stay too
    for wid in ids[250:350]:
        await expired.store(wid, State.RUNNING, 1, 1, Kind.TRAINING)
    await expired.invalidate_many({wid: 2 for wid in ids[350:]})

    pruned = 0
    for shard in range(keys.shards):
        pruned += await live.prune(shard, buckets=keys.buckets)
    assert pruned == 150
    present = {wid for wid in ids if await redis.hexists(keys.state_cache_of(wid), wid)}
    assert present == set(ids[:250])
    assert set(await live.get_many(ids)) == set(ids[:200])


async def test_pruning_visits_every_bucket_in_turn(redis: Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix, shards=16)  # 256 buckets per shard
    expired = StateCache(redis, keys, ttl_s=0)
    ids = [f"x{n}" for n in range(2000)]
    await expired.store_many([(w, State.READY, 1, 1, Kind.NOTEBOOK, None) for w in ids])
    shard = 3
    mine = [w for w in ids if keys.shard(w) == shard]
    passes = keys.buckets // 16
    assert sum([await expired.prune(shard, buckets=16) for _ in range(passes)]) == len(mine)
    assert not [w for w in mine if await redis.hexists(keys.state_cache_of(w), w)]
