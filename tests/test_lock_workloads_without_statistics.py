"""Locking a batch's workloads on PostgreSQL stays an index lookup per id however the planner
sees the table: with no statistics (a fresh or never-analyzed database) and the prepared
statement gone generic, as it does after five executions, the ids must never become a filter
searched for every workload row (rows x ids comparisons: seconds of database CPU per storm
batch at tens of thousands of workloads). What is locked stays the registered, not deleted ids."""

from __future__ import annotations

import asyncpg
from sqlalchemy.dialects import postgresql

from statusd.db import create_engine, transaction
from statusd.transition_sql import _LOCK_PG, lock_workloads

WORKLOADS = 20_000


async def test_the_lock_never_filters_every_row_by_the_ids(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(
            "INSERT INTO workloads (id, kind, state, generation, version, labels, last_seq,"
            " state_changed_at, created_at, poll_failures) SELECT 'w-' || lpad(i::text, 6, '0'),"
            " 'training', 'RUNNING', 1, 2, '{}', 1, now(), now(), 0"
            f" FROM generate_series(0, {WORKLOADS - 1}) i"
        )
        await conn.execute("UPDATE workloads SET deleted_at = now() WHERE id = 'w-000004'")
        sql = str(_LOCK_PG.compile(dialect=postgresql.asyncpg.dialect()))
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE lock_batch (VARCHAR[]) AS {sql}")
        ids = [f"w-{i:06d}" for i in range(0, WORKLOADS, 40)]
        async with conn.transaction():
            literal = "{" + ",".join(ids) + "}"  # plain ids: no quoting needed
            plan = [r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE lock_batch('{literal}')")]
    finally:
        await conn.close()
    assert not [line for line in plan if "ANY" in line and "Filter" in line], "\n".join(plan)

    engine = create_engine(pg_url, pool_size=1)
    try:
        async with transaction(engine) as sa_conn:
            locked = await lock_workloads(sa_conn, [*ids[:3], "w-000004", "nobody", ids[-1]])
    finally:
        await engine.dispose()
    assert sorted(locked) == sorted([*ids[:3], ids[-1]])
