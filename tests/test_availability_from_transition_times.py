"""Availability from transition times: a scripted workload (up 50 min, unreachable 10 min, ingest
down 5 min) reports the expected figures to the second, on SQLite and PostgreSQL, through
GET /v1/reports/availability (JSON and CSV); groups; maintenance windows (one-off and recurring in
a non-UTC zone) left out as `maintenance_s`; bad parameters name themselves."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import insert

from statusd import maintenance
from statusd.availability.timeline import Excluded, Span, segments, tally
from statusd.availability.timeline import StateMove as TMove
from statusd.db import create_engine, transaction
from statusd.lifecycle import Kind, State
from statusd.maintenance import Recurrence
from statusd.models import IngestOutage
from statusd.settings import Settings
from statusd.silences import Matcher
from tests.support.api_client import api_client
from tests.support.history import record_story

# Midnight UTC two days ago: far enough back that the whole script is in the past.
T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)


def t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_pure_tally_cuts_excluded_spans_once() -> None:
    moves = [
        TMove(t(0), State.PENDING, State.READY),
        TMove(t(55), State.READY, State.UNREACHABLE),
        TMove(t(65), State.UNREACHABLE, State.READY),
        TMove(t(70), State.READY, State.STOPPED),  # final: time stops counting
    ]
    pieces = segments(T0, moves, t(200).timestamp())
    holes = [Span(t(20).timestamp(), t(25).timestamp())]
    # The same span excluded for two reasons counts once, under the first.
    got = tally(
        pieces,
        Span(t(0).timestamp(), t(200).timestamp()),
        {Excluded.UNHEARD: holes, Excluded.MAINTENANCE: holes},
    )
    assert got.states == {State.READY: 55 * 60.0, State.UNREACHABLE: 600.0}
    assert got.excluded == {Excluded.UNHEARD: 300.0}
    assert got.availability() == pytest.approx(3300 / 3900)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        yield c


async def _script(settings: Settings) -> None:
    """dep-a: READY at T0, UNREACHABLE at +55m, READY again at +65m; ingest down +20m..+25m.
    train-b (team nlp): RUNNING at T0, SUCCEEDED at +30m. Both team labels for grouping."""
    engine = create_engine(settings.database_url)
    try:
        await record_story(
            engine,
            "dep-a",
            Kind.DEPLOYMENT,
            T0,
            [(t(0), State.READY), (t(55), State.UNREACHABLE), (t(65), State.READY)],
            labels={"team": "vision"},
        )
        await record_story(
            engine,
            "train-b",
            Kind.TRAINING,
            T0,
            [(t(0), State.RUNNING), (t(30), State.SUCCEEDED)],
            labels={"team": "nlp"},
        )
        async with transaction(engine) as conn:
            await conn.execute(
                insert(IngestOutage.__table__).values(  # type: ignore[attr-defined]
                    started_at=t(20), ended_at=t(25)
                )
            )
    finally:
        await engine.dispose()


def _window(start: float, end: float) -> str:
    return f"from={t(start).isoformat().replace('+', '%2B')}&to={t(end).isoformat().replace('+', '%2B')}"


async def test_scripted_workload_reports_its_figures_to_the_second(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    await _script(settings)
    resp = await client.get(f"/v1/reports/availability?id=dep-a&{_window(0, 65)}")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    (dep,) = body["workloads"]
    assert dep["id"] == "dep-a" and dep["kind"] == "deployment"
    # up 55 min minus the 5 ingest was down = 50 min; unreachable 10 min.
    assert dep["seconds"] == {"up": 3000.0, "down": 600.0, "starting": 0.0, "stopping": 0.0}
    assert dep["states"] == {"READY": 3000.0, "UNREACHABLE": 600.0}
    assert dep["unheard_s"] == 300.0 and dep["maintenance_s"] == 0.0
    assert dep["availability"] == round(3000 / 3600, 6)
    assert body["total"]["workloads"] == 1 and body["groups"] == []


async def test_groups_by_kind_and_label_and_csv(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    await _script(settings)
    body = await (
        await client.get(f"/v1/reports/availability?group_by=label:team&{_window(0, 65)}")
    ).json()
    groups = {g["group"]: g for g in body["groups"]}
    assert set(groups) == {"vision", "nlp"}
    # train-b: RUNNING 30 min, 5 of them unheard; nothing after SUCCEEDED.
    assert groups["nlp"]["seconds"]["up"] == 1500.0 and groups["nlp"]["unheard_s"] == 300.0
    assert groups["nlp"]["availability"] == 1.0
    total = body["total"]
    assert total["seconds"]["up"] == 4500.0 and total["seconds"]["down"] == 600.0
    assert total["availability"] == round(4500 / 5100, 6)

    by_kind = await (
        await client.get(f"/v1/reports/availability?group_by=kind&kind=training&{_window(0, 65)}")
    ).json()
    assert [w["id"] for w in by_kind["workloads"]] == ["train-b"]
    assert [g["group"] for g in by_kind["groups"]] == ["training"]

    resp = await client.get(
        f"/v1/reports/availability?format=csv&label=team:vision&group_by=kind&{_window(0, 65)}"
    )
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [(r["scope"], r["name"]) for r in rows] == [
        ("workload", "dep-a"),
        ("group", "deployment"),
        ("total", ""),
    ]
    assert rows[0]["up_s"] == "3000.0" and rows[0]["down_s"] == "600.0"
    assert rows[0]["unheard_s"] == "300.0" and rows[0]["availability"] == str(round(3000 / 3600, 6))


async def test_a_window_inside_the_script_counts_only_its_part(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    await _script(settings)
    body = await (await client.get(f"/v1/reports/availability?id=dep-a&{_window(22, 60)}")).json()
    (dep,) = body["workloads"]
    # +22..+25 unheard, +25..+55 READY, +55..+60 UNREACHABLE.
    assert dep["seconds"]["up"] == 1800.0 and dep["seconds"]["down"] == 300.0
    assert dep["unheard_s"] == 180.0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=yesterday", "from"),
        ("from=2026-12-01T00:00:00", "from"),  # no UTC offset
        ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "to"),
        ("from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("group_by=colour", "group_by"),
        ("group_by=label:", "group_by"),
        ("kind=spaceship", "kind"),
        ("label=nocolon", "label"),
        ("id=bad%20id", "id"),
        ("format=xml", "format"),
        ("colour=red", "colour"),
    ],
)
async def test_bad_parameters_are_refused_naming_them(
    client: TestClient[Any, Any], query: str, field: str
) -> None:
    resp = await client.get(f"/v1/reports/availability?{query}")
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["error"] == "invalid_query" and body["field"] == field


async def _windows(settings: Settings) -> None:
    """Team vision's maintenance: every day 06:00-06:10 in Kolkata (+05:30, so 00:30-00:40 UTC:
    +30..+40 of the script), and once +50..+60. Both planned before the script began."""
    engine = create_engine(settings.database_url)
    try:
        vision = Matcher(label=("team", "vision"))
        planned = T0 - timedelta(days=1)
        await maintenance.create(
            engine,
            vision,
            "daily reindex",
            recurrence=Recurrence("0 6 * * *", 600, "Asia/Kolkata"),
            created_at=planned,
        )
        await maintenance.create(
            engine, vision, "one-off", starts_at=t(50), ends_at=t(60), created_at=planned
        )
    finally:
        await engine.dispose()


async def test_maintenance_time_is_left_out_of_up_and_down(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    await _script(settings)
    await _windows(settings)
    body = await (
        await client.get(f"/v1/reports/availability?group_by=label:team&{_window(0, 65)}")
    ).json()
    dep, train = body["workloads"]
    # READY 0..55 without unheard 20..25 and maintenance 30..40 and 50..55: 35 min;
    # UNREACHABLE 55..65 without maintenance 55..60: 5 min.
    assert dep["seconds"]["up"] == 2100.0 and dep["seconds"]["down"] == 300.0
    assert dep["unheard_s"] == 300.0 and dep["maintenance_s"] == 1200.0
    assert dep["availability"] == round(2100 / 2400, 6)
    assert train["id"] == "train-b" and train["maintenance_s"] == 0.0  # team nlp: not covered
    groups = {g["group"]: g for g in body["groups"]}
    assert groups["vision"]["maintenance_s"] == 1200.0 and groups["nlp"]["maintenance_s"] == 0.0
    assert body["total"]["maintenance_s"] == 1200.0
    assert body["total"]["seconds"]["up"] == 3600.0  # 2100 + train-b's 1500
