"""Listing with filters and keyset pagination; liveness merged from Redis; `stale` and `synced`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from statusd import liveness
from statusd.keys import Keys
from statusd.settings import Settings
from tests.support.api_client import api_client

FLEET = [
    ("a-train-1", "training", {"owner": "ana", "team": "ml"}),
    ("a-train-2", "training", {"owner": "bo", "team": "ml"}),
    ("b-nb-1", "notebook", {"owner": "ana"}),
    ("b-nb-2", "notebook", {"owner": "ana", "team": "data"}),
    ("c-dep-1", "deployment", {"owner": "cy", "team": "ml"}),
    ("c-dep-2", "deployment", {}),
    ("c-dep-3", "deployment", {"owner": "ana", "team": "ml"}),
]


# A main API nobody answers on: configured, so `synced` is a boolean; never drained here.
UNDRAINED_MAIN_API = "http://127.0.0.1:9"


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(make_settings()) as c:
        for wid, kind, labels in FLEET:
            resp = await c.post("/v1/workloads", json={"id": wid, "kind": kind, "labels": labels})
            assert resp.status == 201
        yield c


async def collect(client: TestClient[Any, Any], query: str, limit: int) -> tuple[list[str], int]:
    """Follow next_cursor to the end; returns ids and the number of pages."""
    ids: list[str] = []
    cursor: str | None = None
    for pages in range(1, 50):
        suffix = f"&cursor={cursor}" if cursor else ""
        resp = await client.get(
            f"/v1/workloads?limit={limit}{('&' + query) if query else ''}{suffix}"
        )
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert len(body["items"]) <= limit
        ids += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages
    raise AssertionError("pagination did not end")


async def test_keyset_pages_cover_everything_once_in_id_order(client: TestClient[Any, Any]) -> None:
    everyone = sorted(w for w, _, _ in FLEET)
    for limit in (1, 2, 3, 7, 500):
        ids, pages = await collect(client, "", limit)
        assert ids == everyone, limit
        assert pages == -(-len(everyone) // limit), limit  # no trailing empty page


async def test_pagination_is_stable_while_rows_are_added(client: TestClient[Any, Any]) -> None:
    first = await (await client.get("/v1/workloads?limit=3")).json()
    # a new id sorting before the cursor must not shift the next page (no OFFSET)
    assert (
        await client.post("/v1/workloads", json={"id": "a-0", "kind": "training"})
    ).status == 201
    second = await (await client.get(f"/v1/workloads?limit=3&cursor={first['next_cursor']}")).json()
    assert [i["id"] for i in second["items"]] == ["b-nb-2", "c-dep-1", "c-dep-2"]


@pytest.mark.parametrize(
    "query,expected",
    [
        ("kind=notebook", ["b-nb-1", "b-nb-2"]),
        ("kind=deployment&state=PENDING", ["c-dep-1", "c-dep-2", "c-dep-3"]),
        ("label=owner:ana", ["a-train-1", "b-nb-1", "b-nb-2", "c-dep-3"]),
        ("label=owner:ana&label=team:ml", ["a-train-1", "c-dep-3"]),
        ("kind=deployment&label=team:ml", ["c-dep-1", "c-dep-3"]),
        ("label=owner:nobody", []),
        ("state=RUNNING", ["a-train-2"]),
    ],
)
async def test_filters(client: TestClient[Any, Any], query: str, expected: list[str]) -> None:
    assert (
        await client.post("/v1/workloads/a-train-2/transitions", json={"to": "RUNNING"})
    ).status == 200
    ids, _ = await collect(client, query, 2)
    assert ids == expected


async def test_liveness_from_redis_is_merged_and_drives_stale(
    client: TestClient[Any, Any], settings: Settings, redis: Any
) -> None:
    keys = Keys(settings.redis_prefix)
    now = time.time()
    await liveness.mark_seen(redis, keys, {"a-train-1": (now, 41)})
    await liveness.mark_seen(redis, keys, {"b-nb-1": (now - 10 * settings.heartbeat_ttl, 7)})
    fresh = await (await client.get("/v1/workloads/a-train-1")).json()
    assert fresh["last_seq"] == 41 and fresh["stale"] is False
    assert fresh["last_seen_at"] is not None
    gone = await (await client.get("/v1/workloads/b-nb-1")).json()
    assert gone["last_seq"] == 7 and gone["stale"] is True
    never_seen = await (await client.get("/v1/workloads/c-dep-2")).json()
    assert (
        never_seen["last_seen_at"] is None and never_seen["stale"] is False
    )  # registered just now

    stale_ids, _ = await collect(client, "stale=true", 2)
    assert stale_ids == ["b-nb-1"]
    fresh_ids, _ = await collect(client, "stale=false", 2)
    assert fresh_ids == sorted(w for w, _, _ in FLEET if w != "b-nb-1")


async def test_synced_is_false_while_a_main_outbox_row_waits(
    make_settings: Callable[..., Settings],
) -> None:
    # A main API is configured (nothing drains here: no worker runs), so rows wait for it.
    async with api_client(make_settings(main_api_url=UNDRAINED_MAIN_API)) as client:
        for wid in ("c-dep-1", "c-dep-2"):
            created = await client.post("/v1/workloads", json={"id": wid, "kind": "deployment"})
            assert created.status == 201 and (await created.json())["synced"] is True
        assert (await (await client.get("/v1/workloads/c-dep-1")).json())["synced"] is True
        moved = await client.post("/v1/workloads/c-dep-1/transitions", json={"to": "DEPLOYING"})
        assert moved.status == 200
        assert (await (await client.get("/v1/workloads/c-dep-1")).json())["synced"] is False
        listed = {
            i["id"]: i["synced"]
            for i in (await (await client.get("/v1/workloads")).json())["items"]
        }
        assert listed["c-dep-1"] is False and listed["c-dep-2"] is True


async def test_synced_is_null_without_a_main_api(client: TestClient[Any, Any]) -> None:
    """No STATUSD_MAIN_API_URL: nothing is synced and nothing is behind, so `synced` is null
    (not a `false` that would stay false forever)."""
    assert (
        await client.post("/v1/workloads/c-dep-1/transitions", json={"to": "DEPLOYING"})
    ).status == 200
    assert (await (await client.get("/v1/workloads/c-dep-1")).json())["synced"] is None
    listed = (await (await client.get("/v1/workloads")).json())["items"]
    assert listed and all(item["synced"] is None for item in listed)
    story = await (await client.get("/v1/reports/workloads/c-dep-1")).json()
    assert story["workload"]["synced"] is None and story["sync"]["synced"] is None


async def test_deleted_workloads_leave_the_list(client: TestClient[Any, Any]) -> None:
    assert (await client.delete("/v1/workloads/b-nb-1")).status == 200
    ids, _ = await collect(client, "", 100)
    assert "b-nb-1" not in ids and len(ids) == len(FLEET) - 1


async def test_history_pages_oldest_first(client: TestClient[Any, Any]) -> None:
    for to in ("STARTING", "READY", "IDLE", "READY", "IDLE"):
        assert (
            await client.post("/v1/workloads/b-nb-2/transitions", json={"to": to})
        ).status == 200
    seen: list[str] = []
    after = 0
    for _ in range(10):  # 5 rows at 2 a page: 3 pages; more means paging never ends
        body = await (
            await client.get(f"/v1/workloads/b-nb-2/transitions?limit=2&after={after}")
        ).json()
        seen += [t["to"] for t in body["items"]]
        if body["next_after"] is None:
            break
        after = body["next_after"]
    else:
        raise AssertionError(f"history paging did not end; seen {seen}")
    assert seen == ["STARTING", "READY", "IDLE", "READY", "IDLE"]
