"""Real databases for tests: a migrated template per xdist worker, a fresh copy per test.

SQLite: the template file is copied. PostgreSQL: CREATE DATABASE ... TEMPLATE (tens of ms).
PostgreSQL variants skip when no server answers, except on CI (CI=true), where they must run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

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
    import asyncio

    import asyncpg

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


class PostgresTemplate:
    def __init__(self, worker: str) -> None:
        self.name = f"statusd_tpl_{worker}_{uuid.uuid4().hex[:6]}"
        pg_admin(f'CREATE DATABASE "{self.name}"')
        migrate(pg_url(self.name))
        self.created: list[str] = []

    def new_database(self) -> str:
        name = f"statusd_t_{uuid.uuid4().hex[:12]}"
        pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"')
        self.created.append(name)
        return pg_url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        pg_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
