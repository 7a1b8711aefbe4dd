"""Database engines: one async engine per process, PostgreSQL (asyncpg) or SQLite (aiosqlite).

The same code runs on both; the differences live here:
- SQLite: WAL, a busy timeout, and BEGIN IMMEDIATE so a transaction takes the write lock up front
  (two observations of one workload serialize instead of deadlocking on lock upgrade); opened
  read-write-only so a moved-away file is an error (DB down) rather than a fresh empty database.
- PostgreSQL: row locks (SELECT ... FOR UPDATE) in `statusd.transitions`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from statusd.errors import StatusdError, StorageUnavailable, is_transient

SQLITE_BUSY_TIMEOUT_MS = 30_000
READONLY_OPTION = "statusd_readonly"


def normalize_url(raw: str) -> URL:
    """Accept the URLs operators type (postgresql://, sqlite:///) and pick the async drivers."""
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        url = url.set(drivername="postgresql+asyncpg")
    elif url.drivername == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return url


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def sqlite_path(url: URL) -> str | None:
    return url.database if is_sqlite(url) and url.database not in (None, "", ":memory:") else None


def create_engine(
    database_url: str, *, pool_size: int = 10, create_file: bool = False
) -> AsyncEngine:
    """Create this process's engine. `create_file` is only for migrations (they create the file)."""
    url = normalize_url(database_url)
    if is_sqlite(url):
        path = sqlite_path(url)
        connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if path is not None:
            mode = "rwc" if create_file else "rw"
            url = url.set(database=f"file:{path}?mode={mode}", query={**url.query, "uri": "true"})
        engine = create_async_engine(
            url, connect_args=connect_args, pool_size=pool_size, max_overflow=0
        )
        _sqlite_pragmas(engine)
        return engine
    engine = create_async_engine(
        url,
        # Every connection the pool may open stays open: an overflow connection would be closed
        # on its return and reopened by the next burst, a new PostgreSQL session (SSL set-up,
        # authentication, a backend fork) per checkout under load. Past `pool_size` concurrent
        # users a checkout waits (pool_timeout) for a connection to come back instead.
        pool_size=pool_size,
        max_overflow=0,
        # No pool_pre_ping: asyncpg's costs two round trips (BEGIN, ROLLBACK) on every checkout,
        # more than a registration's own statements. `_replace_closed` catches what it was for.
        pool_timeout=30,
        connect_args={"timeout": 10, "command_timeout": 30},
    )
    _replace_closed(engine)
    return engine


def _replace_closed(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(_dbapi_conn: Any, _record: Any, proxy: Any) -> None:
        # A connection PostgreSQL closed (a restart, pg_terminate_backend) is known closed to
        # asyncpg without a round trip; the pool replaces it when the checkout raises this.
        driver = proxy.driver_connection
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the server closed this pooled connection")


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is off so our BEGIN IMMEDIATE is the one that runs.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front; readers (see `reading`) use a deferred BEGIN.
        readonly = conn.get_execution_options().get(READONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One DB transaction; connection-level failures surface as StorageUnavailable."""
    try:
        async with engine.begin() as conn:
            yield conn
    except (StatusdError, RedisError):
        raise  # already says what failed (e.g. Redis, down, from inside the transaction)
    except Exception as exc:
        if is_transient(exc):  # the one cause-chain walk (statusd.errors)
            raise StorageUnavailable(f"database unavailable: {type(exc).__name__}: {exc}") from exc
        raise


@asynccontextmanager
async def each_statement(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection on which every statement is its own transaction, for work whose statements
    are each atomic alone: on PostgreSQL it saves the BEGIN and COMMIT round trips. SQLite
    (a local file, no round trips to save) runs it as one `transaction`."""
    if is_sqlite(engine.url):
        async with transaction(engine) as conn:
            yield conn
        return
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn
    except (StatusdError, RedisError):
        raise  # already says what failed (e.g. Redis, down, from inside the transaction)
    except Exception as exc:
        if is_transient(exc):  # the one cause-chain walk (statusd.errors)
            raise StorageUnavailable(f"database unavailable: {type(exc).__name__}: {exc}") from exc
        raise


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only unit of work; on SQLite it does not take the write lock."""
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{READONLY_OPTION: True})
            yield conn
    except (StatusdError, RedisError):
        raise  # already says what failed (e.g. Redis, down, from inside the transaction)
    except Exception as exc:
        if is_transient(exc):  # the one cause-chain walk (statusd.errors)
            raise StorageUnavailable(f"database unavailable: {type(exc).__name__}: {exc}") from exc
        raise
