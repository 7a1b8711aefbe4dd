"""The workload-parent migration downgrades and upgrades again on SQLite and PostgreSQL: the
`parent` column, its index and the held-alerts table come and go, and a registered workload's
row survives the round trip."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, text

from statusd.db import create_engine
from tests.test_migration_retention_downgrades import alembic

REVISION = "0006"
PREVIOUS = "0005"


async def schema(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def read(sync_conn: object) -> dict[str, Any]:
                insp: Any = inspect(sync_conn)
                tables = set(insp.get_table_names())
                return {
                    "tables": tables,
                    "workload_columns": {c["name"] for c in insp.get_columns("workloads")},
                    "indexes": {
                        str(ix["name"]) for t in tables for ix in insp.get_indexes(t) if ix["name"]
                    },
                }

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def execute(url: str, sql: str) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql))
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def test_downgrade_then_upgrade(database_url: str) -> None:
    up = await schema(database_url)
    assert "parent" in up["workload_columns"] and "held_alerts" in up["tables"]
    assert {"ix_workloads_parent", "ix_held_alerts_parent"} <= up["indexes"]
    await execute(
        database_url,
        "INSERT INTO workloads (id, kind, state, generation, version, labels, state_changed_at,"
        " created_at, poll_failures, parent) VALUES ('child', 'training', 'PENDING', 1, 0, '{}',"
        " '2026-12-06 00:00:00+00:00', '2026-12-06 00:00:00+00:00', 0, 'node')",
    )

    alembic(database_url, "downgrade", PREVIOUS)
    down = await schema(database_url)
    assert "parent" not in down["workload_columns"] and "held_alerts" not in down["tables"]
    assert not {"ix_workloads_parent", "ix_held_alerts_parent"} & down["indexes"]
    assert await execute(database_url, "SELECT id, state FROM workloads") == [("child", "PENDING")]

    alembic(database_url, "upgrade", "head")
    assert await schema(database_url) == up
    # The link is not restored (the downgrade dropped it): the row is there, parent NULL.
    assert await execute(database_url, "SELECT id, parent FROM workloads") == [("child", None)]
