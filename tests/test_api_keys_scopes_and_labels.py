"""Scoped API keys: read keys read, write keys write, admin keys manage keys; labels fence a key
into its own team's workloads (others are 404, left out of lists, reports and events)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from statusd.access import api_keys
from statusd.access.scopes import Scope
from statusd.api.auth import KEY_CACHE, access_of
from statusd.api.operations import OPERATIONS, Auth
from statusd.app_keys import RUNTIME
from statusd.settings import Settings
from tests.support.access_keys import as_key, mint
from tests.support.api_client import api_client

VISION = {"team": "vision"}
SPEECH = {"team": "speech"}


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[TestClient[Any, Any]]:
    # Every registered workload is past its start timeout at once: the stale report lists them.
    async with api_client(make_settings(start_timeout=0.001)) as c:
        yield c


def _path(path: str, workload_id: str) -> str:
    return path.replace("{id}", workload_id)


def _key_routes(scope: Scope) -> list[tuple[str, str]]:
    return [
        (op.method, op.path)
        for op in OPERATIONS
        if op.auth is Auth.API_TOKEN and op.needed_scope is scope
    ]


async def _status(client: TestClient[Any, Any], method: str, path: str, key: dict[str, Any]) -> int:
    async with client.request(method, path, headers=as_key(key), json={}) as resp:
        if resp.status == 403:
            body = await resp.json()
            assert body["error"] == "forbidden", body
            assert body["needed_scope"] in body["message"], body
        return resp.status


async def test_a_read_key_reads_everything_and_changes_nothing(
    client: TestClient[Any, Any],
) -> None:
    assert (
        await client.post("/v1/workloads", json={"id": "nb-1", "kind": "notebook"})
    ).status == 201
    assert (await client.post("/v1/workloads/nb-1/transitions", json={"to": "READY"})).status == 200
    window = await client.post(
        "/v1/maintenances",
        json={"match": {"id": "nb-1"}, "schedule": "0 3 * * *", "duration_s": 60, "reason": "x"},
    )
    window_id = (await window.json())["id"]
    reader = await mint(client, "dashboard", "read")
    for method, path in _key_routes(Scope.READ):
        url = _path(path, window_id if path.startswith("/v1/maintenances") else "nb-1")
        if path == "/v1/events":
            async with client.get(url, headers=as_key(reader)) as resp:
                assert resp.status == 200 and resp.content_type == "text/event-stream"
            continue
        assert await _status(client, method, url, reader) == 200, (method, path)
    for scope in (Scope.WRITE, Scope.ADMIN):
        for method, path in _key_routes(scope):
            async with client.request(
                method, _path(path, "nb-1"), headers=as_key(reader), json={}
            ) as resp:
                body = await resp.json()
                assert resp.status == 403, (method, path, body)
                assert body["error"] == "forbidden" and body["needed_scope"] == scope.value
    still = await (await client.get("/v1/workloads/nb-1")).json()
    assert still["state"] == "READY"  # nothing the read key tried changed anything


async def test_a_write_key_registers_but_cannot_manage_keys(client: TestClient[Any, Any]) -> None:
    writer = await mint(client, "scheduler", "write")
    resp = await client.post(
        "/v1/workloads", json={"id": "tr-1", "kind": "training"}, headers=as_key(writer)
    )
    assert resp.status == 201
    for method, path in (("POST", "/v1/keys"), ("GET", "/v1/keys"), ("GET", "/v1/audit")):
        resp = await client.request(
            method, path, json={"name": "x", "scope": "admin"}, headers=as_key(writer)
        )
        body = await resp.json()
        assert resp.status == 403 and body == {
            "error": "forbidden",
            "message": body["message"],
            "needed_scope": "admin",
        }, (method, path)
    deleted = await client.delete("/v1/workloads/tr-1", headers=as_key(writer))
    assert deleted.status == 200


async def test_the_key_is_shown_once_and_only_its_digest_is_kept(
    client: TestClient[Any, Any],
) -> None:
    created = await mint(client, "ci", "write", VISION, expires_in="90d")
    assert set(created) == {"id", "key", "name", "scope", "labels", "expires_at"}
    assert created["scope"] == "write" and created["labels"] == VISION
    expires = datetime.fromisoformat(created["expires_at"])
    assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)
    listed = await (await client.get("/v1/keys")).json()
    raw = orjson.dumps(listed).decode()
    assert created["key"] not in raw and "digest" not in raw
    (item,) = [k for k in listed["items"] if k["id"] == created["id"]]
    assert item["name"] == "ci" and item["revoked_at"] is None
    record = await api_keys.fetch_key(client.app[RUNTIME].engine, created["id"])
    assert record is not None and record.digest == api_keys.digest(created["key"])
    assert created["key"] not in orjson.dumps(record.as_json()).decode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scope": "root"}, "scope"),
        ({"name": "x", "scope": "read", "expires_in": "5x"}, "expires_in"),
        ({"name": "x", "scope": "read", "expires_in": "0d"}, "expires_in"),
        ({"name": "", "scope": "read"}, "name"),
        ({"scope": "read"}, "name"),
        ({"name": "x", "scope": "read", "labels": {"team": 3}}, "labels.team"),
    ],
)
async def test_a_bad_key_request_is_422_naming_the_field(
    client: TestClient[Any, Any], body: dict[str, Any], field: str
) -> None:
    resp = await client.post("/v1/keys", json=body)
    answer = await resp.json()
    assert resp.status == 422 and answer["field"] == field, answer


async def test_revoked_expired_and_forged_keys_are_refused(client: TestClient[Any, Any]) -> None:
    rt = client.app[RUNTIME]
    long_ago = datetime.now(UTC) - timedelta(days=2)
    expired = await api_keys.create_key(
        rt.engine,
        name="old",
        scope=Scope.ADMIN,
        labels={},
        expires_in=timedelta(days=1),
        now=long_ago,
    )
    live = await mint(client, "live", "read")
    forged = live["key"][:-4] + ("AAAA" if not live["key"].endswith("AAAA") else "BBBB")
    for presented in (expired.key, forged, "sk1.0000000000000000." + "a" * 43):
        resp = await client.get("/v1/workloads", headers={"Authorization": f"Bearer {presented}"})
        assert resp.status == 401, presented
    assert (await client.get("/v1/workloads", headers=as_key(live))).status == 200
    assert (await client.delete(f"/v1/keys/{live['id']}")).status == 200
    # This process revoked it: its own cache forgets at once (others within the cache TTL).
    assert (await client.get("/v1/workloads", headers=as_key(live))).status == 401
    assert (await client.delete("/v1/keys/nope")).status == 404
    assert client.app[KEY_CACHE] is not None


async def _register(client: TestClient[Any, Any], wid: str, labels: dict[str, str]) -> None:
    resp = await client.post(
        "/v1/workloads", json={"id": wid, "kind": "notebook", "labels": labels}
    )
    assert resp.status == 201, await resp.text()


async def _events_until(
    client: TestClient[Any, Any], key: dict[str, Any], last_id: int
) -> list[dict[str, Any]]:
    """Every event of /v1/events (from the start) up to transition `last_id`, as this key sees it."""
    seen: list[dict[str, Any]] = []
    async with client.get(
        "/v1/events?last_event_id=0", headers=as_key(key), timeout=aiohttp.ClientTimeout(total=30)
    ) as resp:
        assert resp.status == 200
        fields: dict[str, str] = {}
        while not seen or seen[-1]["id"] < last_id:
            line = (await asyncio.wait_for(resp.content.readline(), 20)).decode().rstrip("\n")
            if line == "" and "data" in fields:
                seen.append(orjson.loads(fields["data"]))
                fields = {}
            elif line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    return seen


async def test_a_labelled_key_sees_and_changes_only_its_teams_workloads(
    client: TestClient[Any, Any],
) -> None:
    await _register(client, "vis-1", {**VISION, "tier": "gpu"})
    await _register(client, "sp-1", SPEECH)
    await _register(client, "vis-2", VISION)
    vision = await mint(client, "vision-ci", "write", VISION)
    mine = as_key(vision)

    listed = await (await client.get("/v1/workloads", headers=mine)).json()
    assert [w["id"] for w in listed["items"]] == ["vis-1", "vis-2"]
    other_team = await client.get("/v1/workloads?label=team:speech", headers=mine)
    assert (await other_team.json())["items"] == []

    for method, path in (
        ("GET", "/v1/workloads/sp-1"),
        ("GET", "/v1/workloads/sp-1/transitions"),
        ("POST", "/v1/workloads/sp-1/transitions"),
        ("DELETE", "/v1/workloads/sp-1"),
        ("GET", "/v1/reports/workloads/sp-1"),
    ):
        resp = await client.request(method, path, json={"to": "READY"}, headers=mine)
        assert resp.status == 404, (method, path)
        assert (await resp.json())["error"] == "not_found"
    unknown = await client.get("/v1/workloads/never-was", headers=mine)
    assert unknown.status == 404  # the same answer as for another team's: no existence leak
    assert (await client.get("/v1/workloads/sp-1")).status == 200  # untouched, still there

    refused = await client.post(
        "/v1/workloads", json={"id": "vis-3", "kind": "notebook"}, headers=mine
    )
    body = await refused.json()
    assert refused.status == 422 and body["field"] == "labels" and "team:vision" in body["message"]
    wrong = await client.post(
        "/v1/workloads",
        json={"id": "vis-3", "kind": "notebook", "labels": SPEECH},
        headers=mine,
    )
    assert wrong.status == 422 and (await wrong.json())["field"] == "labels"
    ok = await client.post(
        "/v1/workloads",
        json={"id": "vis-3", "kind": "notebook", "labels": {**VISION, "x": "y"}},
        headers=mine,
    )
    assert ok.status == 201

    stale = await (await client.get("/v1/reports/stale", headers=mine)).json()
    assert sorted(i["id"] for i in stale["items"]) == ["vis-1", "vis-2", "vis-3"]
    everyone = await (await client.get("/v1/reports/stale")).json()
    assert "sp-1" in {i["id"] for i in everyone["items"]}

    for wid in ("sp-1", "vis-1"):
        assert (await client.post(f"/v1/workloads/{wid}/transitions", json={"to": "READY"})).ok
    last = await (await client.post("/v1/workloads/vis-2/transitions", json={"to": "READY"})).json()
    events = await _events_until(client, vision, last["transition"]["id"])
    assert [e["workload_id"] for e in events] == ["vis-1", "vis-2"]
    recent = await (await client.get("/v1/reports/transitions", headers=mine)).json()
    assert [t["workload_id"] for t in recent["items"]] == ["vis-2", "vis-1"]

    summary = await (await client.get("/v1/reports/summary", headers=mine)).json()
    assert sum(n for states in summary["counts"].values() for n in states.values()) == 3
    assert summary["stale"]["total"] == len(stale["items"])
    overall = await (await client.get("/v1/reports/summary")).json()
    assert sum(n for states in overall["counts"].values() for n in states.values()) == 4
    history = await (await client.get("/v1/reports/history", headers=mine)).json()
    assert sum(history["samples"][-1]["counts"].values()) == 3
    # A silence's matcher reaches across teams: only keys without labels may set or list them.
    assert (await client.get("/v1/silences", headers=mine)).status == 403


def test_every_key_route_declares_the_scope_its_openapi_operation_states(
    make_settings: Callable[..., Settings],
) -> None:
    from statusd.app import create_app

    app = create_app(make_settings(), consumers=0)
    declared = {}
    for route in app.router.routes():
        access = access_of(route.handler)
        if access is not None and access.authenticated and route.method != "HEAD":
            declared[(route.method, route.resource.canonical if route.resource else "")] = (
                access.needed(route.method)
            )
    documented = {
        (op.method, op.path): op.needed_scope for op in OPERATIONS if op.needed_scope is not None
    }
    assert declared == documented


async def test_a_labelled_key_reports_availability_and_batch_registers_only_its_team(
    client: TestClient[Any, Any],
) -> None:
    await _register(client, "vis-a", VISION)
    await _register(client, "sp-a", SPEECH)
    mine = as_key(await mint(client, "vision-batch", "write", VISION))

    report = await (await client.get("/v1/reports/availability", headers=mine)).json()
    assert [w["id"] for w in report["workloads"]] == ["vis-a"]
    everyone = await (await client.get("/v1/reports/availability")).json()
    assert {w["id"] for w in everyone["workloads"]} == {"vis-a", "sp-a"}

    batch = await client.post(
        "/v1/workloads:batch",
        json={
            "items": [
                {"id": "vis-b", "kind": "training", "labels": VISION},
                {"id": "sp-b", "kind": "training", "labels": SPEECH},
                {"id": "none-b", "kind": "training"},
            ]
        },
        headers=mine,
    )
    body = await batch.json()
    assert batch.status == 200, body
    assert [r["status"] for r in body["results"]] == [201, 422, 422]
    assert [r.get("field") for r in body["results"][1:]] == ["labels", "labels"]
    assert (await client.get("/v1/workloads/sp-b")).status == 404  # nothing written for them
    assert (await client.get("/v1/workloads/vis-b", headers=mine)).status == 200
