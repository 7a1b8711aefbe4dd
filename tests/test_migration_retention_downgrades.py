"""The retention migration downgrades and upgrades again on SQLite and PostgreSQL, leaving no
table or index of its own behind."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from sqlalchemy import inspect

from statusd.db import create_engine
from tests.support.databases import ROOT

REVISION = "0005"
PREVIOUS = "0004"


def alembic(url: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
        cwd=ROOT,
        env={**os.environ, "STATUSD_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )


async def schema(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def read(sync_conn: object) -> tuple[set[str], set[str]]:
                insp: Any = inspect(sync_conn)
                tables = set(insp.get_table_names())
                indexes = {
                    str(ix["name"]) for t in tables for ix in insp.get_indexes(t) if ix["name"]
                }
                return tables, indexes

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def test_downgrade_then_upgrade(database_url: str) -> None:
    tables, indexes = await schema(database_url)
    assert {"availability_days", "ingest_outages", "high_water_marks"} <= tables
    assert {"ix_transitions_recorded_at", "ix_outbox_status_created"} <= indexes
    alembic(database_url, "downgrade", PREVIOUS)
    down_tables, down_indexes = await schema(database_url)
    assert not {"availability_days", "ingest_outages", "high_water_marks"} & down_tables
    assert not {"ix_transitions_recorded_at", "ix_workloads_state_changed"} & down_indexes
    alembic(database_url, "upgrade", "head")
    assert await schema(database_url) == (tables, indexes)
