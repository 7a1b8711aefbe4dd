"""The stale report carries disruption mode as the sweeper recorded it (statusd.selfwatch):
`GET /v1/reports/stale` and `statusd report stale --format json` have `"disruption"`, the table
has a banner, CSV stays pure CSV (the banner goes to stderr)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.selfwatch import DisruptionMode, write_disruption
from statusd.settings import Settings
from tests.conftest import settings_env
from tests.support.api_client import api_client
from tests.support.processes import run_statusd_async


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        yield c


async def report(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await run_statusd_async(
        ["report", "stale", *args], {**settings_env(settings), "COLUMNS": "250"}
    )


async def test_report_carries_the_disruption_state(
    client: TestClient[Any, Any], settings: Settings, redis: Redis, redis_prefix: str
) -> None:
    body = await (await client.get("/v1/reports/stale")).json()
    assert body["disruption"] == {
        "active": False,
        "since": None,
        "stale": 0,
        "tracked": 0,
        "fraction": 0.0,
    }
    quiet = await report(settings)
    assert quiet.returncode == 0 and "DISRUPTION" not in quiet.stdout, quiet.stdout

    since = time.time() - 30
    await write_disruption(
        redis, Keys(redis_prefix), DisruptionMode(active=True, since=since, stale=130, tracked=200)
    )
    body = await (await client.get("/v1/reports/stale")).json()
    assert body["disruption"]["active"] is True and body["disruption"]["fraction"] == 0.65
    table = await report(settings)
    assert "DISRUPTION MODE" in table.stdout and "130 of 200" in table.stdout, table.stdout
    as_json = await report(settings, "--format", "json")
    assert orjson.loads(as_json.stdout)["disruption"]["stale"] == 130
    as_csv = await report(settings, "--format", "csv")
    assert as_csv.stdout.startswith("id,kind,state") and "DISRUPTION MODE" in as_csv.stderr
