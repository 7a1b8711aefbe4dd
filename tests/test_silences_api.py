"""POST/GET/DELETE /v1/silences on both databases: 201 with an id, listing, deletion, bad input
as 422 naming the field with nothing written, API-token auth, and `"silenced": true` on the
matching workloads (GET one, list, stale report), which outlives a flush of statusd's Redis keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from sqlalchemy import func, select

from statusd.db import create_engine, reading
from statusd.models import SilenceRow
from statusd.settings import Settings
from tests.support.api_client import api_client

_S = SilenceRow.__table__  # type: ignore[attr-defined]


def later(seconds: float = 3600) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        for wid, kind, labels in (
            ("train-a", "training", {"team": "vision"}),
            ("train-b", "training", {"team": "nlp"}),
            ("nb-a", "notebook", {"team": "vision"}),
        ):
            resp = await c.post("/v1/workloads", json={"id": wid, "kind": kind, "labels": labels})
            assert resp.status == 201
        yield c


async def silence_rows(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    try:
        async with reading(engine) as conn:
            return int((await conn.execute(select(func.count()).select_from(_S))).scalar_one())
    finally:
        await engine.dispose()


async def silenced_flags(c: TestClient[Any, Any]) -> dict[str, bool]:
    resp = await c.get("/v1/workloads")
    return {w["id"]: w["silenced"] for w in (await resp.json())["items"]}


async def test_create_list_show_and_delete(
    client: TestClient[Any, Any], settings: Settings, redis: Redis, redis_prefix: str
) -> None:
    assert await silenced_flags(client) == {"nb-a": False, "train-a": False, "train-b": False}
    resp = await client.post(
        "/v1/silences",
        json={
            "match": {"kind": "training", "label": "team:vision"},
            "until": later(),
            "reason": "ana: GPU node drain",
        },
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["id"] and created["active"] is True
    assert created["match"] == {"kind": "training", "label": "team:vision"}
    assert resp.headers["Location"] == f"/v1/silences/{created['id']}"
    # Only the workload matching every matcher is silenced; all are still tracked and shown.
    assert await silenced_flags(client) == {"nb-a": False, "train-a": True, "train-b": False}
    one = await (await client.get("/v1/workloads/train-a")).json()
    assert one["silenced"] is True and one["flapping"] is False

    by_id = await client.post(
        "/v1/silences", json={"match": {"id": "nb-a"}, "until": later(), "reason": "debugging"}
    )
    assert by_id.status == 201
    listed = await (await client.get("/v1/silences")).json()
    assert listed["count"] == 2 and {s["id"] for s in listed["items"]} == {
        created["id"],
        (await by_id.json())["id"],
    }

    # Silences live in the database: statusd's Redis keys gone, still silenced.
    keys = [k async for k in redis.scan_iter(match=f"{redis_prefix}*")]
    if keys:
        await redis.delete(*keys)
    assert await silenced_flags(client) == {"nb-a": True, "train-a": True, "train-b": False}

    assert (await client.delete(f"/v1/silences/{created['id']}")).status == 200
    assert (await client.delete(f"/v1/silences/{created['id']}")).status == 404
    assert await silenced_flags(client) == {"nb-a": True, "train-a": False, "train-b": False}
    active = await (await client.get("/v1/silences?active=true")).json()
    assert [s["match"] for s in active["items"]] == [{"id": "nb-a"}]
    assert await silence_rows(settings) == 1


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, body, error, field)
    ("empty match", {"match": {}, "until": "FUTURE", "reason": "x"}, "invalid_value", "match"),
    ("match not an object", {"match": "train-a", "until": "FUTURE", "reason": "x"}, "invalid_type", "match"),
    ("unknown matcher", {"match": {"owner": "ana"}, "until": "FUTURE", "reason": "x"}, "unknown_field", "match.owner"),
    ("unknown kind", {"match": {"kind": "batch"}, "until": "FUTURE", "reason": "x"}, "invalid_value", "match.kind"),
    ("label without colon", {"match": {"label": "team"}, "until": "FUTURE", "reason": "x"}, "invalid_value", "match.label"),
    ("label bad key", {"match": {"label": "te am:x"}, "until": "FUTURE", "reason": "x"}, "invalid_value", "match.label"),
    ("bad id", {"match": {"id": "a/b"}, "until": "FUTURE", "reason": "x"}, "invalid_value", "match.id"),
    ("id not a string", {"match": {"id": 7}, "until": "FUTURE", "reason": "x"}, "invalid_type", "match.id"),
    ("past until", {"match": {"id": "train-a"}, "until": "PAST", "reason": "x"}, "invalid_value", "until"),
    ("until without offset", {"match": {"id": "train-a"}, "until": "2999-01-01T00:00:00", "reason": "x"}, "invalid_value", "until"),
    ("until garbage", {"match": {"id": "train-a"}, "until": "tomorrow", "reason": "x"}, "invalid_value", "until"),
    ("until a number", {"match": {"id": "train-a"}, "until": 1900000000, "reason": "x"}, "invalid_type", "until"),
    ("missing until", {"match": {"id": "train-a"}, "reason": "x"}, "missing_field", "until"),
    ("missing match", {"until": "FUTURE", "reason": "x"}, "missing_field", "match"),
    ("missing reason", {"match": {"id": "train-a"}, "until": "FUTURE"}, "missing_field", "reason"),
    ("blank reason", {"match": {"id": "train-a"}, "until": "FUTURE", "reason": "  "}, "invalid_value", "reason"),
    ("unknown field", {"match": {"id": "train-a"}, "until": "FUTURE", "reason": "x", "by": "ana"}, "unknown_field", "by"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "error", "field"), BAD, ids=[b[0] for b in BAD])
async def test_bad_silences_are_422_naming_the_field_and_write_nothing(
    client: TestClient[Any, Any],
    settings: Settings,
    case: str,
    body: dict[str, Any],
    error: str,
    field: str,
) -> None:
    if body.get("until") == "FUTURE":
        body = {**body, "until": later()}
    elif body.get("until") == "PAST":
        body = {**body, "until": later(-60)}
    resp = await client.post("/v1/silences", json=body)
    assert resp.status == 422, (case, await resp.text())
    doc = await resp.json()
    assert (doc["error"], doc["field"]) == (error, field), doc
    assert await silence_rows(settings) == 0


async def test_auth_malformed_json_and_query(
    client: TestClient[Any, Any], settings: Settings, make_settings: Callable[..., Settings]
) -> None:
    body = {"match": {"id": "train-a"}, "until": later(), "reason": "x"}
    for method, path in (
        ("POST", "/v1/silences"),
        ("GET", "/v1/silences"),
        ("DELETE", "/v1/silences/x"),
    ):
        resp = await client.request(
            method, path, json=body, headers={"Authorization": "Bearer nope"}
        )
        assert resp.status == 401, (method, path)
    resp = await client.post(
        "/v1/silences", data=b'{"match": ', headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400 and (await resp.json())["field"] == "body"
    resp = await client.get("/v1/silences?active=maybe")
    assert resp.status == 400 and (await resp.json())["field"] == "active"
    resp = await client.get("/v1/silences?sort=until")
    assert resp.status == 400 and (await resp.json())["field"] == "sort"
    assert await silence_rows(settings) == 0
