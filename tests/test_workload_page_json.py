"""The JSON behind the workload views, on real SQLite and PostgreSQL with a real Redis:
one workload's story (timeline bands, transitions, refused observations, polls, sync), the fleet
list's id-prefix search, the banners' self-watch signals, and the HTML pages' 404 and sign-in."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import update

from statusd import selfwatch
from statusd.api.auth import COOKIE_NAME
from statusd.app_keys import RUNTIME
from statusd.db import transaction
from statusd.lifecycle import Kind, Source, State
from statusd.liveness import on_registered
from statusd.models import OutboxEntry, OutboxStatus, WorkloadRow
from statusd.registry import register
from statusd.settings import Settings
from statusd.transitions import Observation, Outcome, apply_observation
from tests.conftest import TEST_API_TOKEN
from tests.support.api_client import api_client

_W = WorkloadRow.__table__  # type: ignore[attr-defined]
_O = OutboxEntry.__table__  # type: ignore[attr-defined]
ANONYMOUS = {"Authorization": ""}


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[TestClient[Any, Any]]:
    # A main API is configured (never answering, nothing drains here): `synced` is a boolean.
    async with api_client(make_settings(main_api_url="http://127.0.0.1:9")) as c:
        yield c


@pytest.fixture
async def cookie(client: TestClient[Any, Any]) -> dict[str, str]:
    """Headers of a signed-in page: the session cookie /login hands out, and no bearer token."""
    resp = await client.post(
        "/login", data={"token": TEST_API_TOKEN}, headers=ANONYMOUS, allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    session = resp.cookies[COOKIE_NAME].value
    client.session.cookie_jar.clear()  # only the cookie each request sends by hand
    return {"Cookie": f"{COOKIE_NAME}={session}", "Authorization": ""}


async def _registered(client: TestClient[Any, Any], wid: str, kind: Kind, **kw: Any) -> None:
    rt = client.server.app[RUNTIME]
    await register(rt.engine, wid, kind, **kw)
    await on_registered(rt.redis, rt.keys, wid, time.time())


async def test_a_workloads_story_tells_what_happened(
    client: TestClient[Any, Any], cookie: dict[str, str]
) -> None:
    rt = client.server.app[RUNTIME]
    await _registered(client, "train-7", Kind.TRAINING, labels={"team": "vision"})
    for state, seq in ((State.STARTING, 1), (State.RUNNING, 2)):
        obs = Observation("train-7", state, Source.PUSH, seq=seq)
        assert (await apply_observation(rt.ledger, obs)).outcome is Outcome.APPLIED
    backward = Observation("train-7", State.STARTING, Source.PUSH, seq=3, reason="restarted")
    assert (await apply_observation(rt.ledger, backward)).outcome is Outcome.REFUSED
    verdict = Observation("train-7", State.UNREACHABLE, Source.SWEEPER, reason="2 polls failed")
    assert (await apply_observation(rt.ledger, verdict)).outcome is Outcome.APPLIED
    # The first transition's main-DB row went dead (say the main API refused it); the rest wait.
    async with transaction(rt.engine) as conn:
        await conn.execute(
            update(_O)
            .where(_O.c.workload_id == "train-7", _O.c.payload["state"].as_string() == "STARTING")
            .values(status=OutboxStatus.DEAD, last_error="HTTP 422: unknown workload", attempts=1)
        )
        await conn.execute(
            update(_W)
            .where(_W.c.id == "train-7")
            .values(poll_failures=2, last_poll_error="connect timeout")
        )

    resp = await client.get("/v1/reports/workloads/train-7", headers=cookie)
    assert resp.status == 200, await resp.text()
    story = await resp.json()
    assert story["workload"]["id"] == "train-7" and story["workload"]["state"] == "UNREACHABLE"
    assert story["workload"]["labels"] == {"team": "vision"}
    # Bands: the registration state, then one per transition, oldest first, contiguous.
    bands = story["timeline"]
    assert [b["state"] for b in bands] == ["PENDING", "STARTING", "RUNNING", "UNREACHABLE"]
    assert bands[0]["start"] == story["workload"]["created_at"]
    assert all(a["end"] == b["start"] for a, b in zip(bands, bands[1:], strict=False))
    assert bands[-1]["end"] is None and bands[0]["transition_id"] is None
    assert [t["to"] for t in story["transitions"]] == ["STARTING", "RUNNING", "UNREACHABLE"]
    assert story["transitions_complete"] is True
    assert [b["transition_id"] for b in bands[1:]] == [t["id"] for t in story["transitions"]]
    (refused,) = story["refused"]
    assert refused["requested_state"] == "STARTING" and refused["current_state"] == "RUNNING"
    assert refused["reason"] == "restarted" and "backward" in refused["rule"]
    assert story["polls"] == {
        "status_url": None,
        "last_poll_at": None,
        "poll_failures": 2,
        "last_poll_error": "connect timeout",
        "transitions_from_polls": 0,
    }
    sync = story["sync"]
    assert sync["synced"] is False
    assert sync["targets"]["main"]["pending"] == 2 and sync["targets"]["main"]["dead"] == 1
    assert sync["last_error"]["error"] == "HTTP 422: unknown workload"


async def test_a_workload_with_no_history_has_no_bands_and_is_synced(
    client: TestClient[Any, Any],
) -> None:
    await _registered(client, "nb-1", Kind.NOTEBOOK)
    story = await (await client.get("/v1/reports/workloads/nb-1")).json()
    assert story["timeline"] == [] and story["transitions"] == [] and story["refused"] == []
    assert story["sync"] == {"synced": True, "targets": {}, "last_error": None}


async def test_unknown_workloads_are_404_as_json_and_as_a_page(
    client: TestClient[Any, Any],
    cookie: dict[str, str],
) -> None:
    for wid in ("nobody", "bad%20id"):
        resp = await client.get(f"/v1/reports/workloads/{wid}")
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    page = await client.get("/workloads/nobody-here", headers=cookie)
    assert page.status == 404 and page.content_type == "text/html"
    assert "No workload nobody-here" in await page.text()
    assert "Content-Security-Policy" in page.headers
    # Markup in an id is shown as text, never run.
    evil = await client.get("/workloads/%3Cscript%3Ealert(1)%3C%2Fscript%3E", headers=cookie)
    assert evil.status == 404 and "<script>" not in await evil.text()


async def test_pages_and_their_json_need_the_sign_in(
    client: TestClient[Any, Any], cookie: dict[str, str]
) -> None:
    await _registered(client, "dep-1", Kind.DEPLOYMENT)
    for path in ("/workloads", "/workloads/dep-1", "/workloads/nobody"):
        resp = await client.get(path, headers=ANONYMOUS, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/", path
    for path in ("/workloads", "/workloads/dep-1"):
        resp = await client.get(path, headers=cookie)
        assert resp.status == 200 and "Content-Security-Policy" in resp.headers, path
    for path in (
        "/v1/reports/workloads/dep-1",
        "/v1/reports/history",
        "/v1/reports/selfwatch",
        "/v1/workloads",
    ):
        assert (await client.get(path, headers=cookie)).status == 200, path
        assert (await client.get(path, headers=ANONYMOUS)).status == 401, path
    for name in ("ui.js", "fleet.js", "workload.js", "overview.js", "workloads.css"):
        assert (await client.get(f"/static/{name}", headers=ANONYMOUS)).status == 200, name


async def test_the_fleet_search_finds_ids_by_prefix_case_sensitively(
    client: TestClient[Any, Any],
) -> None:
    for wid in ("gpu_a.1", "gpu_a.2", "gpuXa.3", "GPU_a.4", "cpu-1"):
        await _registered(client, wid, Kind.TRAINING)

    async def ids(query: str) -> list[str]:
        resp = await client.get(f"/v1/workloads?{query}")
        assert resp.status == 200, await resp.text()
        return [w["id"] for w in (await resp.json())["items"]]

    # `_` and `.` are literal (no LIKE wildcards), and case matters on both databases.
    assert await ids("id_prefix=gpu_a.") == ["gpu_a.1", "gpu_a.2"]
    assert await ids("id_prefix=gpu") == ["gpuXa.3", "gpu_a.1", "gpu_a.2"]
    assert await ids("id_prefix=gpu&limit=1&kind=training") == ["gpuXa.3"]
    assert await ids("id_prefix=") == ["GPU_a.4", "cpu-1", "gpuXa.3", "gpu_a.1", "gpu_a.2"]
    bad = await client.get("/v1/workloads?id_prefix=a%20b")
    assert bad.status == 400 and (await bad.json())["field"] == "id_prefix"


async def test_selfwatch_reports_disruption_and_a_stalled_sweeper(
    client: TestClient[Any, Any],
) -> None:
    rt = client.server.app[RUNTIME]
    body = await (await client.get("/v1/reports/selfwatch")).json()
    assert body["disruption"]["active"] is False
    assert body["sweeper"]["stalled"] is True and body["sweeper"]["last_success_at"] is None

    now = time.time()
    await selfwatch.record_sweep_success(rt.redis, rt.keys, now)
    await selfwatch.write_disruption(
        rt.redis,
        rt.keys,
        selfwatch.DisruptionMode(active=True, since=now - 60, stale=80, tracked=100),
    )
    body = await (await client.get("/v1/reports/selfwatch")).json()
    assert body["sweeper"]["stalled"] is False
    assert body["disruption"] | {"since": None} == {
        "active": True,
        "since": None,
        "stale": 80,
        "tracked": 100,
        "fraction": 0.8,
    }
    # Longer ago than STALLED_AFTER_INTERVALS sweep intervals: stalled again.
    long_ago = now - (selfwatch.STALLED_AFTER_INTERVALS + 1) * rt.settings.sweep_interval
    await selfwatch.record_sweep_success(rt.redis, rt.keys, long_ago)
    assert (await (await client.get("/v1/reports/selfwatch")).json())["sweeper"]["stalled"]


async def test_a_deregistered_workload_keeps_its_story_and_a_new_generation_starts_over(
    client: TestClient[Any, Any],
    cookie: dict[str, str],
) -> None:
    rt = client.server.app[RUNTIME]
    await _registered(client, "nb-9", Kind.NOTEBOOK)
    for state, seq in ((State.STARTING, 1), (State.READY, 2)):
        obs = Observation("nb-9", state, Source.PUSH, seq=seq)
        assert (await apply_observation(rt.ledger, obs)).outcome is Outcome.APPLIED
    assert (await client.delete("/v1/workloads/nb-9")).status == 200

    story = await (await client.get("/v1/reports/workloads/nb-9")).json()
    assert story["deregistered_at"] is not None and story["workload"]["state"] == "READY"
    assert [b["state"] for b in story["timeline"]] == ["PENDING", "STARTING", "READY"]
    assert story["timeline"][-1]["end"] == story["deregistered_at"]  # not "still in it"
    assert (await client.get("/workloads/nb-9", headers=cookie)).status == 200

    # Registered again: a new generation, PENDING again. The table keeps the old history; the
    # timeline tells this registration's story only.
    await _registered(client, "nb-9", Kind.NOTEBOOK)
    story = await (await client.get("/v1/reports/workloads/nb-9")).json()
    assert story["deregistered_at"] is None and story["workload"]["generation"] == 2
    assert story["timeline"] == []
    assert [t["to"] for t in story["transitions"]] == ["STARTING", "READY"]
    obs = Observation("nb-9", State.STARTING, Source.PUSH, seq=1)
    assert (await apply_observation(rt.ledger, obs)).outcome is Outcome.APPLIED
    story = await (await client.get("/v1/reports/workloads/nb-9")).json()
    assert [b["state"] for b in story["timeline"]] == ["PENDING", "STARTING"]
    assert story["timeline"][0]["start"] == story["workload"]["created_at"]
