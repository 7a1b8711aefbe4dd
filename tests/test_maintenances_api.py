"""POST/GET/DELETE /v1/maintenances on both databases: one-off and recurring windows (cron in an
IANA time zone), listing and one by id, deletion, bad input as a 422 naming the field with
nothing written, the scopes (read lists, write plans), an audit row per change, and the Python
client's methods against the same server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from statusd_client.api import AsyncStatusdApi, BadInput, NotFound

from statusd.db import create_engine, reading
from statusd.settings import Settings
from statusd.tables import MAINTENANCES
from tests.conftest import TEST_API_TOKEN
from tests.support.access_keys import as_key, mint
from tests.support.api_client import api_client


def later(seconds: float = 3600) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        yield c


async def maintenance_rows(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    try:
        async with reading(engine) as conn:
            count = await conn.execute(select(func.count()).select_from(MAINTENANCES))
            return int(count.scalar_one())
    finally:
        await engine.dispose()


async def test_plan_list_show_and_delete(client: TestClient[Any, Any], settings: Settings) -> None:
    one_off = await client.post(
        "/v1/maintenances",
        json={
            "match": {"label": "team:vision"},
            "start": later(-60),
            "end": later(600),
            "reason": "ana: storage migration",
        },
    )
    assert one_off.status == 201, await one_off.text()
    created = await one_off.json()
    assert one_off.headers["Location"] == f"/v1/maintenances/{created['id']}"
    assert created["active"] is True and created["schedule"] is None
    assert created["match"] == {"label": "team:vision"}
    assert created["next_end"] == created["end"]

    nightly = await client.post(
        "/v1/maintenances",
        json={
            "match": {"kind": "deployment"},
            "schedule": "30 2 * * *",
            "duration_s": 1800,
            "timezone": "Asia/Kolkata",
            "reason": "nightly reindex",
        },
    )
    assert nightly.status == 201, await nightly.text()
    recurring = await nightly.json()
    assert (recurring["schedule"], recurring["duration_s"], recurring["timezone"]) == (
        "30 2 * * *",
        1800,
        "Asia/Kolkata",
    )
    starts = datetime.fromisoformat(recurring["next_start"])
    # 02:30 in Kolkata (+05:30) is 21:00 UTC.
    assert (starts.hour, starts.minute) == (21, 0)
    assert datetime.fromisoformat(recurring["next_end"]) - starts == timedelta(minutes=30)

    listed = await (await client.get("/v1/maintenances")).json()
    assert listed["count"] == 2
    assert {m["id"] for m in listed["items"]} == {created["id"], recurring["id"]}
    shown = await client.get(f"/v1/maintenances/{recurring['id']}")
    assert shown.status == 200 and (await shown.json())["id"] == recurring["id"]

    assert (await client.delete(f"/v1/maintenances/{created['id']}")).status == 200
    assert (await client.delete(f"/v1/maintenances/{created['id']}")).status == 404
    assert (await client.get(f"/v1/maintenances/{created['id']}")).status == 404
    assert await maintenance_rows(settings) == 1

    audit = await (await client.get("/v1/audit?action=maintenance.create")).json()
    assert len(audit["items"]) == 2 and {r["outcome"] for r in audit["items"]} == {201}
    deleted = await (await client.get("/v1/audit?action=maintenance.delete")).json()
    assert [r["outcome"] for r in deleted["items"]] == [200, 404]


async def test_scopes_read_lists_write_plans(client: TestClient[Any, Any]) -> None:
    reader = await mint(client, "dashboard", "read")
    writer = await mint(client, "oncall", "write")
    body = {"match": {"id": "train-a"}, "start": later(-1), "end": later(), "reason": "x"}
    refused = await client.post("/v1/maintenances", json=body, headers=as_key(reader))
    assert refused.status == 403 and (await refused.json())["needed_scope"] == "write"
    made = await client.post("/v1/maintenances", json=body, headers=as_key(writer))
    assert made.status == 201
    mid = (await made.json())["id"]
    assert (await client.get("/v1/maintenances", headers=as_key(reader))).status == 200
    gone = await client.delete(f"/v1/maintenances/{mid}", headers=as_key(reader))
    assert gone.status == 403
    # A key limited to a team's labels could reach other teams' workloads through a matcher.
    team = await mint(client, "vision", "write", labels={"team": "vision"})
    assert (await client.post("/v1/maintenances", json=body, headers=as_key(team))).status == 403


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, body, error, field)
    ("bad cron", {"match": {"id": "a"}, "schedule": "every 2 minutes", "duration_s": 30, "reason": "x"}, "invalid_value", "schedule"),
    ("cron with seconds", {"match": {"id": "a"}, "schedule": "0 */2 * * * *", "duration_s": 30, "reason": "x"}, "invalid_value", "schedule"),
    ("cron out of range", {"match": {"id": "a"}, "schedule": "61 * * * *", "duration_s": 30, "reason": "x"}, "invalid_value", "schedule"),
    ("never occurs", {"match": {"id": "a"}, "schedule": "0 0 30 2 *", "duration_s": 30, "reason": "x"}, "invalid_value", "schedule"),
    ("unknown timezone", {"match": {"id": "a"}, "schedule": "*/2 * * * *", "duration_s": 30, "timezone": "Mars/Olympus", "reason": "x"}, "invalid_value", "timezone"),
    ("timezone path", {"match": {"id": "a"}, "schedule": "*/2 * * * *", "duration_s": 30, "timezone": "../etc/passwd", "reason": "x"}, "invalid_value", "timezone"),
    ("missing duration", {"match": {"id": "a"}, "schedule": "*/2 * * * *", "reason": "x"}, "missing_field", "duration_s"),
    ("zero duration", {"match": {"id": "a"}, "schedule": "*/2 * * * *", "duration_s": 0, "reason": "x"}, "invalid_value", "duration_s"),
    ("duration without schedule", {"match": {"id": "a"}, "start": "NOW", "end": "LATER", "duration_s": 30, "reason": "x"}, "invalid_value", "duration_s"),
    ("timezone without schedule", {"match": {"id": "a"}, "start": "NOW", "end": "LATER", "timezone": "UTC", "reason": "x"}, "invalid_value", "timezone"),
    ("end before start", {"match": {"id": "a"}, "start": "LATER", "end": "NOW", "reason": "x"}, "invalid_value", "end"),
    ("end in the past", {"match": {"id": "a"}, "start": "PAST", "end": "PAST", "reason": "x"}, "invalid_value", "end"),
    ("end beyond UTC", {"match": {"id": "a"}, "start": "NOW", "end": "9999-12-31T23:59:59-14:00", "reason": "x"}, "invalid_value", "end"),
    ("missing end", {"match": {"id": "a"}, "start": "NOW", "reason": "x"}, "missing_field", "end"),
    ("neither kind", {"match": {"id": "a"}, "reason": "x"}, "missing_field", "start"),
    ("both kinds", {"match": {"id": "a"}, "schedule": "0 2 * * *", "duration_s": 60, "start": "NOW", "end": "LATER", "reason": "x"}, "invalid_value", "start"),
    ("empty match", {"match": {}, "start": "NOW", "end": "LATER", "reason": "x"}, "invalid_value", "match"),
    ("unknown kind", {"match": {"kind": "batch"}, "start": "NOW", "end": "LATER", "reason": "x"}, "invalid_value", "match.kind"),
    ("blank reason", {"match": {"id": "a"}, "start": "NOW", "end": "LATER", "reason": " "}, "invalid_value", "reason"),
    ("unknown field", {"match": {"id": "a"}, "start": "NOW", "end": "LATER", "reason": "x", "by": "ana"}, "unknown_field", "by"),
]  # fmt: skip
TIMES = {"NOW": 0, "LATER": 600, "PAST": -600}


@pytest.mark.parametrize(("case", "body", "error", "field"), BAD, ids=[b[0] for b in BAD])
async def test_bad_windows_are_422_naming_the_field_and_write_nothing(
    client: TestClient[Any, Any],
    settings: Settings,
    case: str,
    body: dict[str, Any],
    error: str,
    field: str,
) -> None:
    body = {k: later(TIMES[v]) if isinstance(v, str) and v in TIMES else v for k, v in body.items()}
    resp = await client.post("/v1/maintenances", json=body)
    assert resp.status == 422, (case, await resp.text())
    doc = await resp.json()
    assert (doc["error"], doc["field"]) == (error, field), doc
    assert await maintenance_rows(settings) == 0


async def test_the_python_client_plans_lists_shows_and_deletes(
    client: TestClient[Any, Any],
) -> None:
    async with AsyncStatusdApi(str(client.make_url("")).rstrip("/"), TEST_API_TOKEN) as api:
        made = await api.create_maintenance(
            label=("team", "vision"),
            schedule="*/2 * * * *",
            duration_s=30,
            timezone="Asia/Kolkata",
            reason="rolling restarts",
        )
        assert made.match == {"label": "team:vision"} and made.timezone == "Asia/Kolkata"
        assert made.next_start is not None and made.next_end is not None
        assert [m.id for m in await api.maintenances()] == [made.id]
        assert (await api.maintenance(made.id)).schedule == "*/2 * * * *"
        assert (await api.delete_maintenance(made.id)).id == made.id
        with pytest.raises(NotFound):
            await api.maintenance(made.id)
        with pytest.raises(BadInput) as refused:
            await api.create_maintenance(workload_id="a", schedule="*/2 * * * *", reason="x")
        assert refused.value.field == "duration_s"


async def test_a_window_keeps_covered_workloads_out_of_stale_and_the_stale_report(
    make_settings: Callable[..., Settings],
) -> None:
    # Every registration is past its start timeout at once: silence alone makes it stale.
    async with api_client(make_settings(start_timeout=0.001)) as c:
        for wid, rack in (("in-window", "r7"), ("outside", "r8")):
            made = await c.post(
                "/v1/workloads", json={"id": wid, "kind": "training", "labels": {"rack": rack}}
            )
            assert made.status == 201
        window = await c.post(
            "/v1/maintenances",
            json={
                "match": {"label": "rack:r7"},
                "start": later(-5),
                "end": later(600),
                "reason": "x",
            },
        )
        assert window.status == 201

        async def stale_flags() -> dict[str, bool]:
            page = await (await c.get("/v1/workloads")).json()
            return {w["id"]: w["stale"] for w in page["items"]}

        assert await stale_flags() == {"in-window": False, "outside": True}
        report = await (await c.get("/v1/reports/stale")).json()
        assert [i["id"] for i in report["items"]] == ["outside"]
        one = await (await c.get("/v1/workloads/in-window")).json()
        assert one["stale"] is False
        assert (await c.delete(f"/v1/maintenances/{(await window.json())['id']}")).status == 200
        # The window is gone (not ended): nothing excuses the silence any more.
        assert await stale_flags() == {"in-window": True, "outside": True}
