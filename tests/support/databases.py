"""Real databases for tests: a migrated template per xdist worker, a fresh copy per test.

SQLite: the template file is copied. PostgreSQL: CREATE DATABASE ... TEMPLATE, or a database an
earlier test released, emptied (see PostgresTemplate).
PostgreSQL variants skip when no server answers, except on CI (CI=true), where they must run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_HOST = os.environ.get("STATUSD_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("STATUSD_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("STATUSD_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("STATUSD_TEST_PG_DB", "test")
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pg_url(database: str, driver: str = "postgresql+asyncpg") -> str:
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def pg_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    if pg_reachable():
        return
    if ON_CI:
        pytest.fail(
            f"CI=true but PostgreSQL does not answer on {PG_HOST}:{PG_PORT}: the PostgreSQL variants must run on CI"
        )
    pytest.skip(f"no PostgreSQL on {PG_HOST}:{PG_PORT}")


def pg_admin(sql: str, database: str = PG_ADMIN_DB) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""

    async def run() -> None:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def migrate(url: str) -> None:
    """Run `alembic upgrade head` the way operators do (a subprocess, the real migrations)."""
    env = {**os.environ, "STATUSD_DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


class SqliteTemplate:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "template.db"
        migrate(f"sqlite+aiosqlite:///{self.path}")

    def new_database(self, directory: Path) -> str:
        target = directory / f"statusd-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(self.path, target)
        return f"sqlite+aiosqlite:///{target}"


# What makes a database "like the template" besides its rows: schema objects, the migration
# version, per-database settings. A test that changed any of them gets its database dropped.
_SHAPE_SQL = """
SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
       || ' ' || coalesce(column_default, '')
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL SELECT 'type ' || typname FROM pg_type WHERE typnamespace = 'public'::regnamespace
UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname !~ '^pg_'
UNION ALL SELECT 'version ' || version_num FROM alembic_version
UNION ALL SELECT 'setting ' || array_to_string(setconfig, ',') FROM pg_db_role_setting
  WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


async def _shape(conn: asyncpg.Connection) -> list[str]:
    return sorted(row[0] for row in await conn.fetch(_SHAPE_SQL))


async def _connect(database: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=database, timeout=10
    )


async def _template_shape(database: str) -> list[str]:
    conn = await _connect(database)
    try:
        return await _shape(conn)
    finally:
        await conn.close()


async def _emptied(database: str, shape: list[str]) -> bool:
    """Back to the template's state: nobody else connected, every row deleted, every sequence
    restarted, the shape unchanged. False when that cannot be had (then the caller drops it)."""
    try:
        conn = await _connect(database)
    except (OSError, asyncpg.PostgresError):  # e.g. connections turned off by an outage test
        return False
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        if await _shape(conn) != shape:
            return False
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        sequences = await conn.fetch(
            "SELECT quote_ident(sequencename) FROM pg_sequences WHERE schemaname = 'public'"
        )
        async with conn.transaction():
            # Rows go in any order (no foreign-key trigger fires); a lock still held somewhere
            # fails this within seconds instead of hanging the suite.
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("SET LOCAL lock_timeout = '5s'")
            for (table,) in tables:
                await conn.execute(f"DELETE FROM {table}")
            for (sequence,) in sequences:
                await conn.execute(f"ALTER SEQUENCE {sequence} RESTART")
        return True
    except (OSError, asyncpg.PostgresError):
        return False
    finally:
        await conn.close()


class PostgresTemplate:
    """A migrated template database per xdist worker. CREATE DATABASE ... TEMPLATE plus its DROP
    cost ~1 s per test on a loaded machine; a released database is instead emptied (tens of ms)
    and handed to the next test, so each test still starts from the template's exact state."""

    def __init__(self, worker: str) -> None:
        self.name = f"statusd_tpl_{worker}_{uuid.uuid4().hex[:6]}"
        pg_admin(f'CREATE DATABASE "{self.name}"')
        migrate(pg_url(self.name))
        self.shape = asyncio.run(_template_shape(self.name))
        self.spare: list[str] = []

    def new_database(self) -> str:
        if self.spare:
            return pg_url(self.spare.pop())
        name = f"statusd_t_{uuid.uuid4().hex[:12]}"
        pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"')
        return pg_url(name)

    def release(self, url: str) -> None:
        """The test is done with `url`: emptied for the next test, or dropped if it cannot be."""
        name = url.rsplit("/", 1)[1]
        if asyncio.run(_emptied(name, self.shape)):
            self.spare.append(name)
        else:
            pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        for name in [*self.spare, self.name]:
            pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
