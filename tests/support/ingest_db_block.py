"""Make the database stop accepting work, for consumer tests: block writers, or refuse connections.

- `hold_write_lock(url)`: writers wait (SQLite: a BEGIN IMMEDIATE held by another connection;
  PostgreSQL: LOCK TABLE workloads in a transaction). Deterministic: a consumer that read entries
  cannot commit (hence cannot ack) until the lock is released.
- `database_down(url)`: the database is unreachable (SQLite: the file and its -wal/-shm moved away,
  then back; PostgreSQL: ALLOW_CONNECTIONS false + pg_terminate_backend, then re-allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.databases import PG_ADMIN_DB, PG_HOST, PG_PORT, PG_USER


def sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    return (
        Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None
    )


def pg_database(url: str) -> str:
    return str(make_url(url).database)


@contextlib.asynccontextmanager
async def hold_write_lock(url: str) -> AsyncIterator[None]:
    path = sqlite_file(url)
    if path is not None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    pg = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=pg_database(url))
    try:
        tx = pg.transaction()
        await tx.start()
        await pg.execute("LOCK TABLE workloads IN EXCLUSIVE MODE")  # blocks SELECT ... FOR UPDATE
        yield
        await tx.rollback()
    finally:
        await pg.close()


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database_down(
    url: str, *, sqlite_engines: Sequence[AsyncEngine] = ()
) -> AsyncIterator[None]:
    """SQLite: open connections keep the moved inode and would go on working, so the engines
    given are disposed after the move (their pooled connections close; new ones cannot open
    the missing file, as after a process restart)."""
    path = sqlite_file(url)
    if path is not None:
        moved = []
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{path}{suffix}")
            if os.path.exists(source):  # noqa: ASYNC240 - a stat, before the outage starts
                target = source.with_name(source.name + ".away")
                os.rename(source, target)
                moved.append((target, source))
        for engine in sqlite_engines:
            await engine.dispose()
        try:
            yield
        finally:
            for target, source in moved:
                os.rename(target, source)
        return
    name = pg_database(url)
    await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        await _pg_admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        yield
    finally:
        await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    await asyncio.sleep(0)
