"""/healthz and /readyz against real dependencies: ready, then Redis or the database down -> 503 naming it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.databases import pg_url
from tests.support.redis_proc import RedisProcess


async def test_ready_when_both_answer(make_settings: Callable[..., Settings]) -> None:
    async with api_client(make_settings()) as client:
        assert (await client.get("/healthz")).status == 200
        resp = await client.get("/readyz")
        assert resp.status == 200
        checks = (await resp.json())["checks"]
        assert (checks["redis"], checks["database"]) == ("ok", "ok")


async def test_redis_down_is_503_naming_redis(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    own = RedisProcess(tmp_path / "own-redis")
    url = own.start()
    try:
        async with api_client(make_settings(redis_url=url)) as client:
            assert (await client.get("/readyz")).status == 200
            own.kill()
            resp = await client.get("/readyz")
            body = await resp.json()
            assert resp.status == 503 and body["down"] == ["redis"], body
            assert body["checks"]["database"] == "ok"
            assert resp.headers["Retry-After"]
            assert (await client.get("/healthz")).status == 200  # the process itself is fine
    finally:
        own.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_database_down_is_503_naming_the_database(
    make_settings: Callable[..., Settings], tmp_path: Path, backend: str
) -> None:
    if backend == "postgres":
        from tests.support.databases import require_postgres

        require_postgres()
        url = pg_url("statusd_no_such_database")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'moved-away.db'}"  # opened mode=rw: no silent new file
    async with api_client(make_settings(database_url=url)) as client:
        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 503 and body["down"] == ["database"], body
        assert "database" in body["message"]
