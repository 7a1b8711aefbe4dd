"""A seq is any int64 (a client may send nanoseconds since the epoch), but Lua's numbers are
doubles: 2^53 + 1 read as a number is 2^53. The consumers' scripts take their items as one JSON
argument, so every seq travels as a string and is stored as sent, in the registration bucket and
in the state cache, and the larger of two seqs that differ past 2^53 still wins. Real Redis."""

from __future__ import annotations

from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.liveness import Registrations, parse_registration
from statusd.state_cache import StateCache

BIG = 2**53 + 1  # the first integer a double cannot hold
NANOS = 1_764_900_000_123_456_789  # a nanosecond timestamp, far past 2^53


async def test_registration_seqs_past_2_53_are_stored_as_sent(
    redis: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    registrations = Registrations(redis, keys)
    await registrations.raise_generations({"t1": 3, "t2": 1}, new=True)
    await registrations.raise_seqs({"t1": BIG, "t2": NANOS})
    await registrations.raise_seqs({"t2": NANOS - 1})  # older: never backward
    got = {
        w: parse_registration(await redis.hget(keys.registration_of(w), w)) for w in ("t1", "t2")
    }
    assert got == {"t1": (3, BIG), "t2": (1, NANOS)}


async def test_cached_seqs_past_2_53_are_stored_as_sent(redis: Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    cache = StateCache(redis, keys)
    await cache.store_many(
        [
            ("t1", State.RUNNING, 2, 1, Kind.TRAINING, None),
            ("t2", State.RUNNING, 2, 4, Kind.TRAINING, 7),
        ]
    )
    await cache.bump_seqs({"t1": (1, NANOS), "t2": (3, NANOS)})  # t2: another generation
    await cache.bump_seqs({"t1": (1, NANOS - 5)})  # older: never backward
    got = await cache.get_many(["t1", "t2", "t3"])
    assert (got["t1"].seq, got["t2"].seq, set(got)) == (NANOS, 7, {"t1", "t2"})
