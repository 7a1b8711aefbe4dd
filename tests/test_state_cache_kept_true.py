"""The Redis state cache consumers rely on is kept true by apply_observation (real Redis, both DBs)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from statusd.db import create_engine
from statusd.keys import Keys
from statusd.lifecycle import Kind, Source, State
from statusd.registry import register
from statusd.state_cache import StateCache
from statusd.transitions import Ledger, Observation, Outcome, apply_observation


@pytest.fixture
async def cached_ledger(
    database_url: str, redis: Redis, redis_prefix: str
) -> AsyncIterator[Ledger]:
    engine = create_engine(database_url)
    yield Ledger(engine=engine, cache=StateCache(redis, Keys(redis_prefix)))
    await engine.dispose()


async def test_applied_change_is_written_back(cached_ledger: Ledger) -> None:
    assert cached_ledger.cache is not None
    await register(cached_ledger.engine, "n1", Kind.NOTEBOOK)
    await apply_observation(cached_ledger, Observation("n1", State.READY, Source.PUSH, seq=1))
    cached = (await cached_ledger.cache.get_many(["n1"]))["n1"]
    assert (cached.state, cached.version, cached.generation) == (State.READY, 1, 1)
    assert cached.makes_no_change("READY", 1)
    assert not cached.makes_no_change("IDLE", 1)
    assert not cached.makes_no_change("READY", 2), "another generation must take the database path"


async def test_cache_miss_is_reseeded_and_refusals_are_remembered(cached_ledger: Ledger) -> None:
    cache = cached_ledger.cache
    assert cache is not None
    await register(cached_ledger.engine, "t1", Kind.TRAINING)
    await apply_observation(cached_ledger, Observation("t1", State.RUNNING, Source.PUSH, seq=1))
    await cache.invalidate("t1", 1)  # a miss at the current version
    result = await apply_observation(
        cached_ledger, Observation("t1", State.RUNNING, Source.PUSH, seq=2)
    )
    assert result.outcome is Outcome.UNCHANGED
    assert (await cache.get_many(["t1"]))["t1"].state is State.RUNNING
    refused = await apply_observation(
        cached_ledger, Observation("t1", State.STARTING, Source.PUSH, seq=3)
    )
    assert refused.outcome is Outcome.REFUSED
    assert (await cache.get_many(["t1"]))["t1"].makes_no_change("STARTING", 1)


async def test_an_older_version_never_overwrites_a_newer_one(cached_ledger: Ledger) -> None:
    cache = cached_ledger.cache
    assert cache is not None
    await cache.store("d1", State.DEGRADED, 5, 1, Kind.DEPLOYMENT)
    await cache.store("d1", State.READY, 4, 1, Kind.DEPLOYMENT)  # a slow writer, late
    assert (await cache.get_many(["d1"]))["d1"].state is State.DEGRADED


async def test_a_slow_older_store_cannot_resurrect_the_state_a_commit_is_replacing(
    cached_ledger: Ledger,
) -> None:
    """invalidate(v+1) before the commit; a concurrent writer's late store(v) is refused; the
    commit's own store(v+1) lands. Before the tombstone, the late store(v) won until then."""
    cache = cached_ledger.cache
    assert cache is not None
    await cache.store("n2", State.READY, 3, 1, Kind.NOTEBOOK)
    await cache.invalidate("n2", 4)  # READY -> IDLE is about to commit as version 4
    await cache.store("n2", State.READY, 3, 1, Kind.NOTEBOOK)  # an unchanged observation, late
    assert await cache.get_many(["n2"]) == {}, "the old state came back while IDLE was committing"
    await cache.store("n2", State.IDLE, 4, 1, Kind.NOTEBOOK)
    assert (await cache.get_many(["n2"]))["n2"].state is State.IDLE
