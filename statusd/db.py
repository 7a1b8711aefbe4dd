"""Database engines: one async engine per process, PostgreSQL (asyncpg) or SQLite (aiosqlite).

The same code runs on both; the differences live here:
- SQLite: WAL, a busy timeout, and BEGIN IMMEDIATE so a transaction takes the write lock up front
  (two observations of one workload serialize instead of deadlocking on lock upgrade); opened
  read-write-only so a moved-away file is an error (DB down) rather than a fresh empty database.
- PostgreSQL: row locks (SELECT ... FOR UPDATE) in `statusd.transitions`; a multi-host URL
  (`postgresql://h1:5432,h2:5432/db`, as libpq writes it) lists a primary and its standbys, and
  every new connection goes to whichever of them accepts writes (see `normalize_url`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.exceptions import RedisError
from sqlalchemy import event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from statusd.errors import StatusdError, StorageUnavailable, is_standby_refusal, is_transient

SQLITE_BUSY_TIMEOUT_MS = 30_000
READONLY_OPTION = "statusd_readonly"
POSTGRES_DRIVERS = ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg")
POSTGRES_DEFAULT_PORT = 5432
# statusd writes on every connection: with several hosts listed, only the one that accepts
# writes will do (asyncpg checks `transaction_read_only` on connect and tries the next host).
MULTI_HOST_SESSION_ATTRS = "read-write"


def normalize_url(raw: str) -> URL:
    """Accept the URLs operators type (postgresql://, sqlite:///) and pick the async drivers.

    A PostgreSQL URL may list several hosts the way libpq does (`h1:5432,h2:5432` in the
    authority) or the way SQLAlchemy does (`?host=h1:5432&host=h2:5432`); both become the
    latter, and without an explicit `target_session_attrs` a multi-host URL asks for the host
    that accepts writes."""
    url = _multi_host_url(raw) or make_url(raw)
    if url.drivername in POSTGRES_DRIVERS:
        url = url.set(drivername="postgresql+asyncpg")
    elif url.drivername == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    hosts = url.query.get("host")
    if isinstance(hosts, tuple) and len(hosts) > 1 and "target_session_attrs" not in url.query:
        url = url.update_query_dict({"target_session_attrs": MULTI_HOST_SESSION_ATTRS})
    return url


def display_url(raw: str) -> str:
    """The database URL as it is safe to show: password hidden, hosts as statusd reads them."""
    return normalize_url(raw).render_as_string(hide_password=True)


def _multi_host_url(raw: str) -> URL | None:
    """`scheme://user:pw@h1:p1,h2:p2/db?...` (libpq's form, which SQLAlchemy's parser cannot
    read) as SQLAlchemy's multi-host URL; None for any other URL. A host without a port gets
    PostgreSQL's default: SQLAlchemy's asyncpg dialect wants a port for every host."""
    parts = urlsplit(raw)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    if "," not in hostlist or parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
        return None
    hosts = []
    for entry in hostlist.split(","):
        host, sep, port = entry.rpartition(":")
        if not sep or host.endswith(":") or entry.endswith("]"):  # no port, or a bare IPv6 host
            host, port = entry, str(POSTGRES_DEFAULT_PORT)
        hosts.append(f"{host}:{port}")
    username, _, password = userinfo.partition(":")
    base = make_url(
        f"{parts.scheme}:///{parts.path.lstrip('/')}" + (f"?{parts.query}" if parts.query else "")
    )
    return URL.create(
        base.drivername,
        username=unquote(username) or None,
        password=unquote(password) if password else None,
        database=base.database,
        query={**base.query, "host": tuple(hosts)},
    )


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
    _drop_connections_to_a_standby(engine)
    return engine


def _replace_closed(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(_dbapi_conn: Any, _record: Any, proxy: Any) -> None:
        # A connection PostgreSQL closed (a restart, pg_terminate_backend) is known closed to
        # asyncpg without a round trip; the pool replaces it when the checkout raises this.
        driver = proxy.driver_connection
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the server closed this pooled connection")


def _drop_connections_to_a_standby(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        # A server that refuses writes (a demoted primary, a standby behind an address that
        # moved) will refuse them on every pooled connection: count it as a disconnect, so
        # SQLAlchemy drops the whole pool and the next checkout connects afresh, where the
        # multi-host URL finds the primary. The error itself is transient (statusd.errors).
        if is_standby_refusal(context.original_exception):
            context.is_disconnect = True


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


@contextmanager
def _storage_errors() -> Iterator[None]:
    """Connection-level failures of the unit of work inside become StorageUnavailable."""
    try:
        yield
    except (StatusdError, RedisError):
        raise  # already says what failed (e.g. Redis, down, from inside the transaction)
    except Exception as exc:
        if is_transient(exc):  # the one cause-chain walk (statusd.errors)
            raise StorageUnavailable(f"database unavailable: {type(exc).__name__}: {exc}") from exc
        raise


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One DB transaction; connection-level failures surface as StorageUnavailable."""
    with _storage_errors():
        async with engine.begin() as conn:
            yield conn


@asynccontextmanager
async def each_statement(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection on which every statement is its own transaction, for work whose statements
    are each atomic alone: on PostgreSQL it saves the BEGIN and COMMIT round trips. SQLite
    (a local file, no round trips to save) runs it as one `transaction`."""
    if is_sqlite(engine.url):
        async with transaction(engine) as conn:
            yield conn
        return
    with _storage_errors():
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only unit of work; on SQLite it does not take the write lock."""
    with _storage_errors():
        async with engine.connect() as conn:
            await conn.execution_options(**{READONLY_OPTION: True})
            yield conn
