"""The api_keys / audit_events migration goes down and up again on both databases."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import inspect

from statusd.db import create_engine
from tests.support.databases import ROOT

NEW_TABLES = {"api_keys", "audit_events"}


def alembic(url: str, *args: str) -> None:
    env = {**os.environ, "STATUSD_DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


async def tables(url: str) -> set[str]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        return set(names)
    finally:
        await engine.dispose()


async def test_downgrade_drops_the_tables_and_upgrade_brings_them_back(database_url: str) -> None:
    assert NEW_TABLES <= await tables(database_url)  # the template is migrated to head
    alembic(database_url, "downgrade", "0003")
    left = await tables(database_url)
    assert not NEW_TABLES & left
    assert {"workloads", "transitions", "silences"} <= left  # nothing else went
    alembic(database_url, "upgrade", "head")
    assert NEW_TABLES <= await tables(database_url)
