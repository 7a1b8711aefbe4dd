"""State-cache entries live in bucket hashes, whose fields have no TTL: the expiry travels in the
value. An expired entry is a miss, exactly like the missing key of the per-workload layout; an
expired tombstone no longer blocks an older store; pruning deletes expired entries, nothing live.
Lifetimes of 0 s make "past its expiry" immediate (no sleeping). An entry shares its workload's
registration field (generation and seq): neither part's writers touch the other. Real Redis."""

from __future__ import annotations

from redis.asyncio import Redis

from statusd import liveness
from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.redis_runtime import run_queued
from statusd.state_cache import StateCache


async def test_an_entry_past_its_expiry_is_a_miss_for_reader_and_writers(
    redis: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    expired = StateCache(redis, keys, ttl_s=0)
    await expired.store("t1", State.RUNNING, 3, 1, Kind.TRAINING, seq=5)
    assert await redis.hget(keys.registration_of("t1"), "t1") is not None  # there, but expired
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
    present = {wid for wid in ids if await redis.hexists(keys.registration_of(wid), wid)}
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
    assert not [w for w in mine if await redis.hexists(keys.registration_of(w), w)]


async def test_the_registration_and_the_cached_state_share_a_field_and_keep_each_other(
    redis: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    registrations = liveness.Registrations(redis, keys)
    live = StateCache(redis, keys)
    expired = StateCache(redis, keys, ttl_s=0)
    await registrations.raise_generations({"r1": 2, "r2": 1, "r3": 1}, new=True)
    await live.store_many([(w, State.RUNNING, 3, 2, Kind.TRAINING, 5) for w in ("r1", "r2")])
    await expired.store("r3", State.RUNNING, 3, 1, Kind.TRAINING)
    await live.store("c1", State.READY, 1, 1, Kind.NOTEBOOK)  # cached, no registration recorded
    await registrations.raise_seqs({"r1": 7, "r2": 6})
    await live.bump_seqs({"r1": (2, 7)})
    await live.mark_refused("r1", 3, "STARTING")
    await live.invalidate("r2", 4)
    assert await liveness.registrations(redis, keys, ["r1", "r2", "r3", "c1"]) == [
        (2, 7),
        (1, 6),
        (1, None),
        (None, None),
    ]
    got = await live.get_many(["r1", "r2", "r3", "c1"])
    assert set(got) == {"r1", "c1"}  # r2 a tombstone, r3 expired
    assert (got["r1"].seq, got["r1"].refused) == (7, frozenset({"STARTING"}))

    pruned = 0
    for shard in range(keys.shards):
        pruned += await live.prune(shard, buckets=keys.buckets)
    assert pruned == 1  # r3's expired entry; its registration stays
    assert await liveness.registrations(redis, keys, ["r3"]) == [(1, None)]
    assert (await redis.hget(keys.registration_of("r3"), "r3")) == b"1|"

    # A new registration drops the cached state with the seq; a rebuild's raise keeps both.
    await registrations.raise_generations({"r1": 2}, new=False)
    assert set(await live.get_many(["r1"])) == {"r1"}
    await registrations.raise_generations({"r1": 3}, new=True)
    assert await live.get_many(["r1"]) == {}
    assert await liveness.registrations(redis, keys, ["r1"]) == [(3, None)]
    await liveness.forget(redis, keys, "c1")
    assert await redis.hget(keys.registration_of("c1"), "c1") is None


async def test_the_ack_records_both_seqs_in_one_call_never_backward(
    redis: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    cache = StateCache(redis, keys)
    await liveness.Registrations(redis, keys).raise_generations({"a1": 2, "a2": 2}, new=True)
    await cache.store_many([(w, State.RUNNING, 3, 2, Kind.TRAINING, 5) for w in ("a1", "a2")])

    async def record(newest: dict[str, tuple[int, int | None]]) -> None:
        await run_queued(redis, cache.record_scripts, lambda p: cache.queue_record_seqs(p, newest))

    # a1: same generation (both raised); a2: an older generation's report (only the
    # registration's seq); n1: nothing recorded before (a registration part appears).
    await record({"a1": (9, 2), "a2": (8, 1), "n1": (4, None)})
    await record({"a1": (7, 2)})  # older: never backward
    assert await liveness.registrations(redis, keys, ["a1", "a2", "n1"]) == [
        (2, 9),
        (2, 8),
        (None, 4),
    ]
    got = await cache.get_many(["a1", "a2", "n1"])
    assert (got["a1"].seq, got["a2"].seq, set(got)) == (9, 5, {"a1", "a2"})


async def test_a_cached_seq_equal_to_the_registrations_is_stored_once_and_kept_apart(
    redis: Redis, redis_prefix: str
) -> None:
    """Client seqs are 19 digits; the field stays under Redis's 64-byte listpack value."""
    keys = Keys(redis_prefix)
    cache = StateCache(redis, keys)
    registrations = liveness.Registrations(redis, keys)
    seq = 1_765_000_000_123_456_789
    await registrations.raise_generations({"d1": 1}, new=True)
    await registrations.raise_seqs({"d1": seq})
    await cache.store("d1", State.UNREACHABLE, 12, 1, Kind.DEPLOYMENT, seq=seq)
    raw = await redis.hget(keys.registration_of("d1"), "d1")
    assert raw is not None and raw.count(str(seq).encode()) == 1 and len(raw) <= 64, raw
    assert (await cache.get_many(["d1"]))["d1"].seq == seq
    # A poll raises the registration's seq alone: the cached one stays what it was.
    await registrations.raise_seqs({"d1": seq + 10**9})  # a second later
    assert (await cache.get_many(["d1"]))["d1"].seq == seq
    assert await liveness.registrations(redis, keys, ["d1"]) == [(1, seq + 10**9)]
