"""`errors.is_transient` is the one cause-chain walk for database failures too (db.py has none of
its own): real driver errors, raised by real SQLite and PostgreSQL, judged as they arrive."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from statusd.db import create_engine, reading, transaction
from statusd.errors import StorageUnavailable, is_transient
from tests.support.processes import free_port


async def raised_by(url: str, sql: str) -> BaseException:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError(f"{sql!r} did not fail")


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> str:
    """A fresh PostgreSQL database: SQLSTATEs are PostgreSQL's, there is no SQLite variant."""
    template = request.getfixturevalue("postgres_template")
    url: str = template.new_database()
    request.addfinalizer(lambda: template.release(url))
    return url


@pytest.mark.postgres
async def test_postgres_serialization_failure_is_transient_and_bad_sql_is_not(
    postgres_url: str,
) -> None:
    raise_state = "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{}'; END $$"
    assert is_transient(await raised_by(postgres_url, raise_state.format("40001")))
    assert is_transient(await raised_by(postgres_url, raise_state.format("57P01")))
    assert not is_transient(await raised_by(postgres_url, raise_state.format("55000")))
    assert not is_transient(await raised_by(postgres_url, "SELECT 1/0"))
    assert not is_transient(await raised_by(postgres_url, "SELECT * FROM no_such_table"))


async def test_a_server_that_is_not_there_is_storage_unavailable() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/statusd"
    engine = create_engine(url)
    try:
        with pytest.raises(StorageUnavailable) as caught:
            async with reading(engine) as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert is_transient(caught.value) and is_transient(caught.value.__cause__)  # type: ignore[arg-type]


async def test_a_moved_sqlite_file_is_transient_a_constraint_is_not(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    url = f"sqlite:///{db}"
    engine = create_engine(url)
    try:
        # The engine opens read-write-only (db.py): a missing file is the database being down.
        with pytest.raises(StorageUnavailable):
            async with transaction(engine) as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    with sqlite3.connect(db) as setup:
        setup.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
    duplicate = await raised_by(url, "INSERT INTO t VALUES (1)")
    assert not is_transient(duplicate)
