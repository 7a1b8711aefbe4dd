"""The outbox's event-key migration keeps every row, on SQLite and PostgreSQL, both ways.

Rows written before it (a transition's main-sync row, a disruption alert with its invented
workload id and transition id) are migrated by the real `alembic upgrade`; the new key refuses a
second row for the same event; `alembic downgrade` gives back the old columns and values.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from statusd.db import create_engine
from tests.support.databases import ROOT, pg_admin, pg_url, require_postgres

OLD_BASE = 1 << 60
FLIP_MS = 1_765_000_000_123

INSERT = sa.text(
    "INSERT INTO outbox (transition_id, workload_id, target, destination, payload, status,"
    " attempts, next_attempt_at, created_at)"
    " VALUES (:tid, :wid, :target, :dest, '{}', 'pending', 0, CURRENT_TIMESTAMP,"
    " CURRENT_TIMESTAMP)"
)
INSERT_KEYED = sa.text(
    "INSERT INTO outbox (event_key, transition_id, workload_id, target, destination, payload,"
    " status, attempts, next_attempt_at, created_at)"
    " VALUES (:key, :tid, :wid, :target, :dest, '{}', 'pending', 0, CURRENT_TIMESTAMP,"
    " CURRENT_TIMESTAMP)"
)


def alembic(url: str, *args: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(ROOT / "alembic.ini"),
            "-x",
            f"url={url}",
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, "STATUSD_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
        return
    require_postgres()
    name = f"t_outbox_{uuid.uuid4().hex[:10]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def execute(url: str, statement: Any, **params: Any) -> list[dict[str, Any]]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(statement, params)
            return [dict(r._mapping) for r in result] if result.returns_rows else []
    finally:
        await engine.dispose()


def rows(url: str) -> list[dict[str, Any]]:
    query = sa.text("SELECT * FROM outbox ORDER BY id")
    return [
        {k: v for k, v in r.items() if k in {"event_key", "transition_id", "workload_id"}}
        for r in asyncio.run(execute(url, query))
    ]


def test_existing_rows_get_their_event_key_and_come_back_on_downgrade(empty_database: str) -> None:
    url = empty_database
    alembic(url, "upgrade", "0002")
    old = dict(target="main", dest="")
    asyncio.run(execute(url, INSERT, tid=7, wid="w1", **old))
    asyncio.run(execute(url, INSERT, tid=8, wid="w1", **old))
    disruption = dict(tid=OLD_BASE + FLIP_MS, wid="statusd/disruption", target="alert")
    asyncio.run(execute(url, INSERT, dest="http://hook", **disruption))
    before = rows(url)

    alembic(url, "upgrade", "head")
    assert rows(url) == [
        {"event_key": "transition:7", "transition_id": 7, "workload_id": "w1"},
        {"event_key": "transition:8", "transition_id": 8, "workload_id": "w1"},
        {"event_key": f"disruption:{FLIP_MS}", "transition_id": None, "workload_id": ""},
    ]
    # One row per (event, target, destination), ever.
    again = dict(key=f"disruption:{FLIP_MS}", tid=None, wid="", target="alert", dest="http://hook")
    with pytest.raises(IntegrityError):
        asyncio.run(execute(url, INSERT_KEYED, **again))
    asyncio.run(execute(url, INSERT_KEYED, **{**again, "dest": "http://other"}))

    alembic(url, "downgrade", "0002")
    after = rows(url)
    assert after[:3] == before
    assert after[3]["transition_id"] == OLD_BASE + FLIP_MS  # the row written under the new key
    alembic(url, "upgrade", "head")  # and up again
    assert [r["event_key"] for r in rows(url)][-1] == f"disruption:{FLIP_MS}"
