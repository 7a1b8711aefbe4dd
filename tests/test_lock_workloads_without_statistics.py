"""Locking a batch's workloads on PostgreSQL, and reading back the versions it wrote, stay an
index lookup per id however the planner sees the table: with no statistics (a fresh or
never-analyzed database) or stale ones (analyzed while the table held one row), and the prepared
statement gone generic, as it does after five executions, the ids must never become a filter
searched for every workload row (rows x ids comparisons: seconds of database CPU per storm
batch at tens of thousands of workloads). What is locked stays the registered, not deleted ids."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql

from statusd.db import create_engine, transaction
from statusd.transition_sql import _LOCK_PG, _VERSIONS_PG, lock_workloads

WORKLOADS = 20_000
# What pg_class says about `workloads`: nothing yet, or an ANALYZE from when it held one row.
STATISTICS = {
    "none": "",
    "stale": "UPDATE pg_class SET reltuples = 1, relpages = 1 WHERE relname = 'workloads'",
}


@pytest.mark.parametrize("statement", [_LOCK_PG, _VERSIONS_PG], ids=["lock", "versions"])
@pytest.mark.parametrize("statistics", sorted(STATISTICS))
async def test_each_id_is_one_index_lookup(
    pg_url: str, statement: Select[tuple[object, ...]], statistics: str
) -> None:
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(
            "INSERT INTO workloads (id, kind, state, generation, version, labels, last_seq,"
            " state_changed_at, created_at, poll_failures) SELECT 'w-' || lpad(i::text, 6, '0'),"
            " 'training', 'RUNNING', 1, 2, '{}', 1, now(), now(), 0"
            f" FROM generate_series(0, {WORKLOADS - 1}) i"
        )
        await conn.execute("UPDATE workloads SET deleted_at = now() WHERE id = 'w-000004'")
        if STATISTICS[statistics]:
            await conn.execute(STATISTICS[statistics])
        sql = str(statement.compile(dialect=postgresql.asyncpg.dialect()))
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE lock_batch (VARCHAR[]) AS {sql}")
        ids = [f"w-{i:06d}" for i in range(0, WORKLOADS, 40)]
        async with conn.transaction():
            literal = "{" + ",".join(ids) + "}"  # plain ids: no quoting needed
            plan = [r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE lock_batch('{literal}')")]
    finally:
        await conn.close()
    # One primary-key lookup per id: the index is searched with the id, never walked whole.
    assert any("Index Cond" in line and "ids.id" in line for line in plan), "\n".join(plan)
    assert not [line for line in plan if "Filter" in line and ("ANY" in line or "ids" in line)], (
        "\n".join(plan)
    )

    engine = create_engine(pg_url, pool_size=1)
    try:
        async with transaction(engine) as sa_conn:
            locked = await lock_workloads(sa_conn, [*ids[:3], "w-000004", "nobody", ids[-1]])
    finally:
        await engine.dispose()
    assert sorted(locked) == sorted([*ids[:3], ids[-1]])
