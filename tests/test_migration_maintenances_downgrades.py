"""The maintenance-window migration downgrades and upgrades again on SQLite and PostgreSQL,
leaving no table of its own behind."""

from __future__ import annotations

from tests.test_migration_retention_downgrades import alembic, schema

PREVIOUS = "0006"


async def test_downgrade_then_upgrade(database_url: str) -> None:
    tables, indexes = await schema(database_url)
    assert "maintenances" in tables
    alembic(database_url, "downgrade", PREVIOUS)
    down_tables, _ = await schema(database_url)
    assert "maintenances" not in down_tables
    assert {"availability_days", "silences"} <= down_tables  # only its own table went
    alembic(database_url, "upgrade", "head")
    assert await schema(database_url) == (tables, indexes)
