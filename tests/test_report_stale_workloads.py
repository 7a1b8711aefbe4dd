"""The stale report, API and CLI, on a fleet with known stale, UNREACHABLE and LOST workloads."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from statusd.liveness import mark_seen
from statusd.runtime import Runtime
from statusd.settings import Settings
from statusd.wiring import open_runtime
from tests.conftest import settings_env
from tests.support.api_client import api_client
from tests.support.oncall_fleet import Fleet, build_fleet
from tests.support.processes import run_statusd


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = await open_runtime(settings)
    yield rt
    await rt.close()


@pytest.fixture
async def fleet(runtime: Runtime) -> Fleet:
    return await build_fleet(runtime)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        yield c


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_statusd(["report", *args], {**settings_env(settings), "COLUMNS": "250"})


@contextlib.asynccontextmanager
async def heartbeating(rt: Runtime, wid: str) -> AsyncIterator[None]:
    """`wid` shows a sign of life every second, as a live workload does, however long the CLI
    subprocesses take on a loaded machine (a 30 s TTL is no bound on how slow they are)."""

    async def beat() -> None:
        while True:
            await mark_seen(rt.redis, rt.keys, {wid: (time.time(), None)})
            await asyncio.sleep(1.0)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def cli_async(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`cli` off the event loop, so a `heartbeating` workload keeps beating meanwhile."""
    return await asyncio.to_thread(cli, settings, *args)


async def test_api_lists_exactly_the_stale_worst_first(
    client: TestClient[Any, Any], fleet: Fleet
) -> None:
    resp = await client.get("/v1/reports/stale")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert [i["id"] for i in body["items"]] == fleet.expected_order
    assert body["count"] == len(fleet.expected_order) and body["generated_at"]
    by_id = {i["id"]: i for i in body["items"]}
    assert [by_id[i]["reason"] for i in fleet.expected_order] == [
        "lost",
        "lost",
        "unreachable",
        "never_seen",
        "stale",
        "stale",
    ]
    lost = by_id["lost-train"]
    assert (
        lost["state"] == "LOST"
        and lost["kind"] == "training"
        and lost["labels"] == {"owner": "carol"}
    )
    assert 990 < lost["stale_for_s"] < 1100 and lost["last_seen_at"] and lost["state_since"]
    assert set(lost) >= {"poll_failures", "last_poll_error"}
    assert by_id["never-seen"]["last_seen_at"] is None and by_id["never-seen"]["state"] == "PENDING"


async def test_api_filters_by_kind_label_and_age(
    client: TestClient[Any, Any], fleet: Fleet
) -> None:
    async def ids(query: str) -> list[str]:
        resp = await client.get(f"/v1/reports/stale?{query}")
        assert resp.status == 200, await resp.text()
        return [i["id"] for i in (await resp.json())["items"]]

    assert await ids("kind=notebook") == ["lost-notebook", "quiet-notebook"]
    assert await ids("kind=notebook&kind=training") == [
        "lost-train",
        "lost-notebook",
        "quiet-notebook",
        "quiet-train",
    ]
    assert await ids("label=owner:alice") == ["unreachable-deploy", "quiet-notebook"]
    assert await ids("label=owner:alice&label=project:p1") == ["quiet-notebook"]
    assert await ids("older_than=5m") == [
        "lost-train",
        "lost-notebook",
        "never-seen",
        "quiet-notebook",
    ]
    assert await ids("older_than=450") == ["lost-train", "lost-notebook", "never-seen"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("kind=robot", "kind"),
        ("label=nocolon", "label"),
        ("older_than=5 parsecs", "older_than"),
        ("format=xml", "format"),
    ],
)
async def test_bad_filters_are_400_naming_the_field(
    client: TestClient[Any, Any], query: str, field: str
) -> None:
    resp = await client.get(f"/v1/reports/stale?{query}")
    assert resp.status == 400
    body = await resp.json()
    assert body["field"] == field and body["error"]


async def test_csv_parses_with_a_header_row(client: TestClient[Any, Any], fleet: Fleet) -> None:
    resp = await client.get("/v1/reports/stale?format=csv")
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["id"] for r in rows] == fleet.expected_order
    assert rows[0]["state"] == "LOST" and rows[0]["labels"] == "owner=carol"
    assert float(rows[0]["stale_for_s"]) > 990


async def test_report_needs_the_api_token(settings: Settings) -> None:
    async with api_client(settings) as c:
        resp = await c.get("/v1/reports/stale", headers={"Authorization": "Bearer wrong"})
        assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"


async def test_cli_exit_codes_formats_and_filters(settings: Settings, runtime: Runtime) -> None:
    empty = cli(settings, "stale")
    assert empty.returncode == 0, empty.stderr
    assert "Nothing is stale" in empty.stdout

    fleet = await build_fleet(runtime)
    async with heartbeating(runtime, "fresh-train"):
        await check_reports(settings, fleet)


async def check_reports(settings: Settings, fleet: Fleet) -> None:
    table = await cli_async(settings, "stale")
    assert table.returncode == 1, table.stderr
    assert "lost-train" in table.stdout and "fresh-train" not in table.stdout

    as_json = await cli_async(settings, "stale", "--format", "json")
    assert as_json.returncode == 1, as_json.stderr
    assert [i["id"] for i in orjson.loads(as_json.stdout)["items"]] == fleet.expected_order

    as_csv = await cli_async(settings, "stale", "--format", "csv", "--kind", "notebook")
    assert as_csv.returncode == 1, as_csv.stderr
    assert [r["id"] for r in csv.DictReader(io.StringIO(as_csv.stdout))] == [
        "lost-notebook",
        "quiet-notebook",
    ]

    filtered = await cli_async(
        settings, "stale", "--label", "owner:nobody", "--older-than", "5m", "--format", "json"
    )
    assert filtered.returncode == 0 and orjson.loads(filtered.stdout)["count"] == 0

    bad = await cli_async(settings, "stale", "--older-than", "soon")
    assert bad.returncode == 2 and "--older-than" in bad.stderr


async def test_cli_summary_counts_kinds_states_and_backlogs(
    settings: Settings, runtime: Runtime
) -> None:
    await build_fleet(runtime)
    async with heartbeating(runtime, "fresh-train"):
        result = await cli_async(settings, "summary", "--json")
        human = await cli_async(settings, "summary")
    assert result.returncode == 0, result.stderr
    data = orjson.loads(result.stdout)
    assert data["counts"]["training"] == {"RUNNING": 2, "LOST": 1, "SUCCEEDED": 1}
    assert data["counts"]["notebook"] == {"READY": 1, "LOST": 1}
    assert data["counts"]["deployment"] == {"UNREACHABLE": 1, "PENDING": 2}
    assert data["stale"]["total"] == 6 and data["stale"]["by_reason"] == {
        "lost": 2,
        "unreachable": 1,
        "never_seen": 1,
        "stale": 2,
    }
    assert data["sync"]["depth"] >= 1  # transitions wait in the outbox (no main API configured)
    assert data["stream"] == {"length": 0, "lag": 0, "pending": 0, "consumers": 0}
    assert (
        human.returncode == 0 and "stale: 6" in human.stdout and "heartbeat stream" in human.stdout
    )
