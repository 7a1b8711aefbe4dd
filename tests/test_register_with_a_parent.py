"""Registering with a parent (POST /v1/workloads and :batch): a parent that is not registered
is a 422 naming `parent` (in a batch, that item's), a workload cannot be its own parent, nothing
is written for a refusal; the workload shows `parent`, and `suppressed_by` once the parent is
UNREACHABLE; a deregistered parent holds nothing and the child keeps the id. Real app on
loopback, real Redis, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from statusd.app_keys import RUNTIME
from statusd.lifecycle import Source, State
from statusd.settings import Settings
from statusd.transitions import Observation, apply_observation
from tests.support.api_client import api_client


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(make_settings()) as c:
        yield c


async def post(client: TestClient[Any, Any], path: str, body: Any) -> tuple[int, Any]:
    resp = await client.post(path, json=body)
    return resp.status, await resp.json()


async def get(client: TestClient[Any, Any], wid: str) -> tuple[int, Any]:
    resp = await client.get(f"/v1/workloads/{wid}")
    return resp.status, await resp.json()


async def test_an_unknown_parent_or_itself_is_a_422_naming_parent(
    client: TestClient[Any, Any],
) -> None:
    status, body = await post(
        client, "/v1/workloads", {"id": "c1", "kind": "training", "parent": "nobody"}
    )
    assert status == 422, body
    assert body["field"] == "parent" and body["error"] == "unknown_parent"
    assert "nobody" in body["message"]
    status, body = await post(
        client, "/v1/workloads", {"id": "c1", "kind": "training", "parent": "c1"}
    )
    assert status == 422 and body["field"] == "parent", body
    assert "own parent" in body["message"]
    status, body = await post(
        client, "/v1/workloads", {"id": "c1", "kind": "training", "parent": "bad id!"}
    )
    assert status == 422 and body["field"] == "parent", body
    assert (await get(client, "c1"))[0] == 404  # nothing written


async def test_batch_refuses_only_the_items_with_a_bad_parent(
    client: TestClient[Any, Any],
) -> None:
    assert (await post(client, "/v1/workloads", {"id": "node", "kind": "deployment"}))[0] == 201
    items = [
        {"id": "c-ok", "kind": "training", "parent": "node"},
        {"id": "c-orphan", "kind": "training", "parent": "ghost"},
        {"id": "c-self", "kind": "training", "parent": "c-self"},
        # Named in the same batch is not "already registered": the parent comes first.
        {"id": "node-2", "kind": "deployment"},
        {"id": "c-late", "kind": "training", "parent": "node-2"},
    ]
    status, body = await post(client, "/v1/workloads:batch", {"items": items})
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == [201, 422, 422, 201, 422]
    assert body["registered"] == 2 and body["refused"] == 3
    assert body["results"][0]["workload"]["parent"] == "node"
    assert body["results"][0]["workload"]["suppressed_by"] is None
    for refused in body["results"][1], body["results"][2], body["results"][4]:
        assert refused["field"] == "parent", refused
    assert body["results"][1]["error"] == "unknown_parent"
    for wid in ("c-orphan", "c-self", "c-late"):
        assert (await get(client, wid))[0] == 404


async def test_suppressed_by_follows_the_parent_and_a_deregistered_parent_holds_nothing(
    client: TestClient[Any, Any],
) -> None:
    assert (await post(client, "/v1/workloads", {"id": "agent", "kind": "deployment"}))[0] == 201
    status, body = await post(
        client, "/v1/workloads", {"id": "box", "kind": "training", "parent": "agent"}
    )
    assert status == 201 and body["parent"] == "agent" and body["suppressed_by"] is None
    ledger = client.server.app[RUNTIME].ledger
    await apply_observation(ledger, Observation("agent", State.READY, Source.PUSH, seq=1))
    await apply_observation(ledger, Observation("agent", State.UNREACHABLE, Source.SWEEPER))

    _, box = await get(client, "box")
    assert box["parent"] == "agent" and box["suppressed_by"] == "agent"
    listed = await (await client.get("/v1/workloads", params={"id_prefix": "box"})).json()
    assert [(w["id"], w["suppressed_by"]) for w in listed["items"]] == [("box", "agent")]
    _, agent = await get(client, "agent")
    assert agent["parent"] is None and agent["suppressed_by"] is None

    # Deregistered, the parent holds nothing; the child keeps the id (a re-registered parent
    # is its parent again).
    assert (await client.delete("/v1/workloads/agent")).status == 200
    _, box = await get(client, "box")
    assert box["parent"] == "agent" and box["suppressed_by"] is None
    assert (await post(client, "/v1/workloads", {"id": "agent", "kind": "deployment"}))[0] == 201
