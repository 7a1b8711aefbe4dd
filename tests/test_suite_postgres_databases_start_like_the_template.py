"""The suite's PostgreSQL databases (tests.support.databases): a database a test released is
handed to the next test only as the template left it (no rows, sequences from 1); one whose
schema a test changed is dropped instead."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from statusd.db import create_engine
from statusd.lifecycle import Kind
from statusd.registry import register
from tests.support.databases import (
    PG_ADMIN_DB,
    PG_HOST,
    PG_PORT,
    PG_USER,
    PostgresTemplate,
    pg_admin,
)

pytestmark = pytest.mark.postgres


async def _sql(url: str, *statements: str) -> list[list[asyncpg.Record]]:
    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=url.rsplit("/", 1)[1]
    )
    try:
        return [await conn.fetch(statement) for statement in statements]
    finally:
        await conn.close()


async def _dirty(url: str) -> None:
    """Rows through statusd's own registration, and every sequence moved on."""
    engine = create_engine(url)
    try:
        await register(engine, "w-left-behind", Kind.TRAINING, labels={"a": "b"})
    finally:
        await engine.dispose()
    (sequences,) = await _sql(
        url, "SELECT quote_ident(sequencename) FROM pg_sequences WHERE schemaname = 'public'"
    )
    assert sequences, "the schema has sequences to restart"
    await _sql(url, *(f"SELECT setval('{name}', 41)" for (name,) in sequences))


def _databases() -> set[str]:
    async def names() -> set[str]:
        (rows,) = await _sql(f"/{PG_ADMIN_DB}", "SELECT datname FROM pg_database")
        return {row[0] for row in rows}

    return asyncio.run(names())


def test_a_released_database_comes_back_empty_with_fresh_sequences(
    postgres_template: PostgresTemplate,
) -> None:
    url = postgres_template.new_database()
    asyncio.run(_dirty(url))
    postgres_template.release(url)

    again = postgres_template.new_database()
    try:
        assert again == url  # reused, not created anew

        async def looks() -> tuple[int, list[int]]:
            (count,) = await _sql(again, "SELECT count(*) FROM workloads")
            (sequences,) = await _sql(
                again,
                "SELECT quote_ident(sequencename) FROM pg_sequences WHERE schemaname = 'public'",
            )
            firsts = await _sql(again, *(f"SELECT nextval('{name}')" for (name,) in sequences))
            return count[0][0], [rows[0][0] for rows in firsts]

        rows, firsts = asyncio.run(looks())
        assert rows == 0
        assert firsts and set(firsts) == {1}
    finally:
        postgres_template.release(again)


def test_a_database_whose_schema_changed_is_dropped_not_reused(
    postgres_template: PostgresTemplate,
) -> None:
    url = postgres_template.new_database()
    name = url.rsplit("/", 1)[1]
    asyncio.run(_sql(url, "CREATE TABLE left_behind (x int)"))
    postgres_template.release(url)
    assert name not in _databases()
    fresh = postgres_template.new_database()
    try:
        assert fresh != url
    finally:
        postgres_template.release(fresh)


def test_a_database_refusing_connections_is_dropped(postgres_template: PostgresTemplate) -> None:
    url = postgres_template.new_database()
    name = url.rsplit("/", 1)[1]
    pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')  # an outage test's leftover
    postgres_template.release(url)
    assert name not in _databases()
