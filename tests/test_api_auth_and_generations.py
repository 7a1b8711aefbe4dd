"""401 without or with a wrong API token; re-registration after DELETE gets a new generation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from statusd import tokens
from statusd.settings import Settings
from tests.conftest import TEST_SECRET
from tests.support.api_client import api_client, bearer


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(make_settings()) as c:
        yield c


PROTECTED = [
    ("POST", "/v1/workloads"),
    ("GET", "/v1/workloads"),
    ("GET", "/v1/workloads/w1"),
    ("DELETE", "/v1/workloads/w1"),
    ("GET", "/v1/workloads/w1/transitions"),
    ("POST", "/v1/workloads/w1/transitions"),
]


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer "])
async def test_protected_routes_need_the_api_token(
    client: TestClient[Any, Any], auth: str | None
) -> None:
    headers = {"Authorization": auth} if auth is not None else {}
    async with aiohttp.ClientSession() as raw:  # no default token header
        for method, path in PROTECTED:
            async with raw.request(
                method, client.make_url(path), headers=headers, json={"id": "x", "kind": "training"}
            ) as resp:
                assert resp.status == 401, (method, path)
                body = await resp.json()
                assert body["error"] == "unauthorized"
    assert (await client.get("/v1/workloads")).status == 200  # and the real token works


async def test_probes_and_openapi_need_no_token(client: TestClient[Any, Any]) -> None:
    async with aiohttp.ClientSession() as raw:
        for path in ("/healthz", "/readyz", "/v1/openapi.json"):
            async with raw.get(client.make_url(path)) as resp:
                assert resp.status == 200, path


async def test_a_token_from_before_delete_is_for_an_older_generation(
    client: TestClient[Any, Any],
) -> None:
    first = await (
        await client.post("/v1/workloads", json={"id": "nb-7", "kind": "notebook"})
    ).json()
    assert (await client.post("/v1/workloads/nb-7/transitions", json={"to": "READY"})).status == 200
    resp = await client.delete("/v1/workloads/nb-7")
    assert resp.status == 200 and (await resp.json())["deleted"] is True
    assert (await client.get("/v1/workloads/nb-7")).status == 404
    assert (await client.delete("/v1/workloads/nb-7")).status == 404
    # history is kept after DELETE
    kept = await (await client.get("/v1/workloads/nb-7/transitions")).json()
    assert [(t["to"], t["generation"]) for t in kept["items"]] == [("READY", 1)]

    resp = await client.post("/v1/workloads", json={"id": "nb-7", "kind": "deployment"})
    assert resp.status == 201
    second = await resp.json()
    assert (second["generation"], second["state"], second["kind"]) == (2, "PENDING", "deployment")
    assert second["heartbeat_token"] != first["heartbeat_token"]
    old = tokens.verify((TEST_SECRET.encode(),), first["heartbeat_token"])
    new = tokens.verify((TEST_SECRET.encode(),), second["heartbeat_token"])
    assert (old.workload_id, old.generation) == ("nb-7", 1)
    assert (new.workload_id, new.generation) == ("nb-7", 2)
    shown = await (await client.get("/v1/workloads/nb-7")).json()
    assert shown["generation"] == 2 and shown["state"] == "PENDING"


async def test_wrong_token_header_does_not_leak_which_part_was_wrong(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.get("/v1/workloads", headers=bearer("nope"))
    assert resp.status == 401
    assert "nope" not in await resp.text()
