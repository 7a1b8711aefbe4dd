"""A database that refuses connections surfaces as StorageUnavailable (503 / retry), not a crash."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from statusd.db import create_engine, transaction
from statusd.errors import StorageUnavailable
from tests.support.databases import pg_admin, pg_url, require_postgres


async def test_postgres_database_not_accepting_connections() -> None:
    require_postgres()
    name = f"statusd_t_{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(pg_admin, f'CREATE DATABASE "{name}"')
    engine = create_engine(pg_url(name))
    try:
        await asyncio.to_thread(pg_admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        with pytest.raises(StorageUnavailable):
            async with transaction(engine) as conn:
                await conn.execute(text("SELECT 1"))
        await asyncio.to_thread(pg_admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        async with transaction(engine) as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
        await asyncio.to_thread(pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_sqlite_file_moved_away(tmp_path: Path, sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    path = Path(sqlite_url.split("///", 1)[1])
    try:
        await asyncio.to_thread(path.rename, tmp_path / "elsewhere.db")
        with pytest.raises(StorageUnavailable):
            async with transaction(engine) as conn:
                await conn.execute(text("SELECT count(*) FROM workloads"))
        assert not await asyncio.to_thread(path.exists), (
            "a moved-away database must not be recreated empty"
        )
    finally:
        await engine.dispose()


async def test_redis_down_inside_a_transaction_is_reported_as_redis(sqlite_url: str) -> None:
    """A state change invalidates the Redis cache inside the DB transaction; with Redis down the
    error must name Redis (503 redis_unavailable), not the healthy database."""
    from redis.asyncio import Redis

    from statusd.errors import RedisUnavailable
    from statusd.keys import Keys
    from statusd.lifecycle import Kind, Source, State
    from statusd.redis_runtime import free_port
    from statusd.registry import register
    from statusd.state_cache import StateCache
    from statusd.transitions import Ledger, Observation, apply_observation

    engine = create_engine(sqlite_url)
    dead = Redis(port=free_port(), socket_connect_timeout=0.5)  # nothing listens there
    try:
        await register(engine, "t1", Kind.TRAINING)
        ledger = Ledger(engine=engine, cache=StateCache(dead, Keys("t:")))
        with pytest.raises(RedisUnavailable):
            await apply_observation(ledger, Observation("t1", State.RUNNING, Source.API))
    finally:
        await dead.aclose()
        await engine.dispose()
