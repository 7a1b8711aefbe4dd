"""POST /v1/workloads:batch: one result per item in the order sent (201 with the workload and its
heartbeat token, or the single route's 409/422 body), nothing written for a refused item, the
STATUSD_MAX_BATCH_ITEMS limit, and heartbeats accepted with the tokens it returns. Real app on
loopback, real Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from statusd import tokens
from statusd.api.registering import REGISTER_CHUNK
from statusd.app_keys import RUNTIME
from statusd.db import reading
from statusd.models import WorkloadRow
from statusd.settings import Settings
from tests.conftest import TEST_SECRET
from tests.support.api_client import api_client
from tests.support.redis_proc import RedisProcess

_W = WorkloadRow.__table__  # type: ignore[attr-defined]
MAX_ITEMS = 5


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(make_settings(max_batch_items=MAX_ITEMS)) as c:
        yield c


async def rows(client: TestClient[Any, Any]) -> dict[str, tuple[int, bool]]:
    """Every workload row: id -> (generation, registered now)."""
    async with reading(client.server.app[RUNTIME].engine) as conn:
        result = await conn.execute(select(_W.c.id, _W.c.generation, _W.c.deleted_at))
        return {r.id: (r.generation, r.deleted_at is None) for r in result}


async def test_results_in_order_mixed_201_409_422_and_nothing_written_for_a_refusal(
    client: TestClient[Any, Any],
) -> None:
    assert (
        await client.post("/v1/workloads", json={"id": "old", "kind": "training"})
    ).status == 201
    single_409 = await (
        await client.post("/v1/workloads", json={"id": "old", "kind": "training"})
    ).json()
    single_422 = await (
        await client.post("/v1/workloads", json={"id": "bad-kind", "kind": "rocket"})
    ).json()
    items = [
        {"id": "a-1", "kind": "training", "labels": {"team": "vision"}},
        {"id": "old", "kind": "training"},  # registered already
        {"id": "bad-kind", "kind": "rocket"},  # the single route's 422
        {"id": "a-1", "kind": "notebook"},  # the same id twice: the first wins
        {"id": "a-2", "kind": "deployment", "status_url": ""},
    ]
    resp = await client.post("/v1/workloads:batch", json={"items": items})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == [201, 409, 422, 409, 201]
    assert (body["registered"], body["refused"]) == (2, 3)
    first, exists, bad, twice, second = body["results"]
    # A refused item reads exactly as the single route answers the same body.
    assert {k: v for k, v in exists.items() if k != "status"} == single_409
    assert {k: v for k, v in bad.items() if k != "status"} == single_422
    assert twice["error"] == "conflict" and "twice" in twice["message"]
    assert first["workload"]["id"] == "a-1" and first["workload"]["labels"] == {"team": "vision"}
    assert (first["workload"]["state"], first["workload"]["kind"]) == ("PENDING", "training")
    assert second["workload"]["id"] == "a-2" and second["workload"]["status_url"] is None
    for created in (first, second):
        claims = tokens.verify((TEST_SECRET.encode(),), created["workload"]["heartbeat_token"])
        assert (claims.workload_id, claims.generation) == (created["workload"]["id"], 1)
    # Exactly what was answered 201 was written; the 409s changed nothing, the 422 wrote nothing.
    assert await rows(client) == {"old": (1, True), "a-1": (1, True), "a-2": (1, True)}
    shown = await (await client.get("/v1/workloads/a-1")).json()
    assert shown["kind"] == "training" and shown["generation"] == 1


async def test_a_deregistered_id_comes_back_with_the_next_generation(
    client: TestClient[Any, Any],
) -> None:
    await client.post("/v1/workloads", json={"id": "nb-1", "kind": "notebook"})
    assert (await client.delete("/v1/workloads/nb-1")).status == 200
    body = await (
        await client.post(
            "/v1/workloads:batch",
            json={
                "items": [{"id": "nb-1", "kind": "notebook"}, {"id": "nb-2", "kind": "notebook"}]
            },
        )
    ).json()
    assert [(r["status"], r["workload"]["generation"]) for r in body["results"]] == [
        (201, 2),
        (201, 1),
    ]
    claims = tokens.verify(
        (TEST_SECRET.encode(),), body["results"][0]["workload"]["heartbeat_token"]
    )
    assert claims.generation == 2
    assert await rows(client) == {"nb-1": (2, True), "nb-2": (1, True)}


async def test_more_items_than_the_limit_is_refused_whole_naming_it(
    client: TestClient[Any, Any],
) -> None:
    items = [{"id": f"w-{i}", "kind": "training"} for i in range(MAX_ITEMS + 1)]
    resp = await client.post("/v1/workloads:batch", json={"items": items})
    assert resp.status == 413
    body = await resp.json()
    assert body["error"] == "too_many_items" and body["field"] == "items"
    assert str(MAX_ITEMS) in body["message"] and "STATUSD_MAX_BATCH_ITEMS" in body["message"]
    assert await rows(client) == {}
    # Exactly the limit is fine.
    resp = await client.post("/v1/workloads:batch", json={"items": items[:MAX_ITEMS]})
    assert resp.status == 200 and (await resp.json())["registered"] == MAX_ITEMS


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "items"),
        ({"items": []}, 422, "items"),
        ({"items": {"id": "x"}}, 422, "items"),
        ({"items": [{"id": "x", "kind": "training"}], "extra": 1}, 422, "extra"),
    ],
)
async def test_a_bad_envelope_is_the_whole_requests_422(
    client: TestClient[Any, Any], body: dict[str, Any], status: int, field: str
) -> None:
    resp = await client.post("/v1/workloads:batch", json=body)
    assert resp.status == status
    assert (await resp.json())["field"] == field
    assert await rows(client) == {}


async def test_an_item_that_is_not_an_object_is_that_items_422(
    client: TestClient[Any, Any],
) -> None:
    body = await (
        await client.post(
            "/v1/workloads:batch", json={"items": ["x", {"id": "ok", "kind": "training"}]}
        )
    ).json()
    assert [r["status"] for r in body["results"]] == [422, 201]
    assert body["results"][0]["error"] == "invalid_body"


async def test_heartbeats_are_accepted_with_the_returned_tokens(
    client: TestClient[Any, Any],
) -> None:
    items = [{"id": f"hb-{i}", "kind": "training"} for i in range(3)]
    body = await (await client.post("/v1/workloads:batch", json={"items": items})).json()
    issued = {r["workload"]["id"]: r["workload"]["heartbeat_token"] for r in body["results"]}
    for wid, token in issued.items():
        resp = await client.post(
            "/v1/heartbeats",
            json={"workload_id": wid, "status": "RUNNING", "seq": 1},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 202, await resp.text()
    beats = [
        {"workload_id": wid, "token": token, "status": "RUNNING", "seq": 2}
        for wid, token in issued.items()
    ]
    resp = await client.post("/v1/heartbeats:batch", json={"items": beats}, headers={})
    assert [r["status"] for r in (await resp.json())["results"]] == [202, 202, 202]
    # A token is for its own workload only.
    resp = await client.post(
        "/v1/heartbeats",
        json={"workload_id": "hb-1", "status": "RUNNING", "seq": 3},
        headers={"Authorization": f"Bearer {issued['hb-0']}"},
    )
    assert resp.status == 403


async def test_the_batch_needs_the_api_token(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/v1/workloads:batch",
        json={"items": [{"id": "x", "kind": "training"}]},
        headers={"Authorization": "Bearer wrong"},
    )
    assert resp.status == 401
    assert await rows(client) == {}


async def test_a_batch_of_several_chunks_keeps_its_order(
    make_settings: Callable[..., Settings],
) -> None:
    """More items than one chunk: every chunk committed, results still in order."""
    n = REGISTER_CHUNK + 7
    async with api_client(make_settings(max_batch_items=n)) as c:
        items = [{"id": f"c-{i:04d}", "kind": "training"} for i in range(n)]
        items[REGISTER_CHUNK + 1] = {"id": "c-0000", "kind": "training"}  # repeats the first
        body = await (await c.post("/v1/workloads:batch", json={"items": items})).json()
        ids = [r["workload"]["id"] if r["status"] == 201 else r["status"] for r in body["results"]]
        expected: list[Any] = [item["id"] for item in items]
        expected[REGISTER_CHUNK + 1] = 409
        assert ids == expected
        async with reading(c.server.app[RUNTIME].engine) as conn:
            count = (await conn.execute(select(func.count()).select_from(_W))).scalar_one()
        assert count == n - 1


async def test_concurrent_registrations_of_one_id_register_it_once(
    client: TestClient[Any, Any],
) -> None:
    """New and re-registered ids alike: one 201, the rest 409, whichever route they came by."""

    async def single(wid: str) -> int:
        return (await client.post("/v1/workloads", json={"id": wid, "kind": "training"})).status

    async def batch(wid: str) -> int:
        resp = await client.post(
            "/v1/workloads:batch", json={"items": [{"id": wid, "kind": "training"}]}
        )
        return int((await resp.json())["results"][0]["status"])

    statuses = await asyncio.gather(*(f("race") for f in (single, batch) * 4))
    assert sorted(statuses) == [201] + [409] * 7
    assert (await client.delete("/v1/workloads/race")).status == 200
    statuses = await asyncio.gather(*(f("race") for f in (single, batch) * 4))
    assert sorted(statuses) == [201] + [409] * 7
    assert await rows(client) == {"race": (2, True)}


async def test_redis_down_leaves_nothing_registered_and_says_retry(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Without Redis a workload would never get its PENDING clock: the chunk written to the
    database is retired again, every item answers 503, and a retry later registers them."""
    own = RedisProcess(tmp_path / "own-redis")
    url = own.start()
    try:
        async with api_client(make_settings(redis_url=url, max_batch_items=10)) as c:
            items = [{"id": "r-1", "kind": "training"}, {"id": "r-2", "kind": "bogus"}]
            own.kill()
            resp = await c.post("/v1/workloads:batch", json={"items": items})
            assert resp.status == 503 and resp.headers["Retry-After"]
            body = await resp.json()
            assert [(r["status"], r["error"]) for r in body["results"]] == [
                (503, "redis_unavailable"),
                (422, "invalid_value"),
            ]
            assert await rows(c) == {"r-1": (1, False)}  # written, then retired: not registered
            own.start()
            resp = await c.post("/v1/workloads:batch", json={"items": items[:1]})
            retried = await resp.json()
            assert resp.status == 200, retried
            assert retried["results"][0]["workload"]["generation"] == 2
            assert await rows(c) == {"r-1": (2, True)}
    finally:
        own.stop()
