"""Bad bodies and bad query parameters: 4xx JSON naming the problem and the field; nothing written."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from statusd.db import create_engine, reading
from statusd.models import OutboxEntry, RefusedObservation, TransitionRow, WorkloadRow
from statusd.settings import Settings
from tests.support.api_client import api_client

TABLES = [m.__table__ for m in (WorkloadRow, TransitionRow, RefusedObservation, OutboxEntry)]  # type: ignore[attr-defined]
MAX_BODY = 2048


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(make_settings(max_body_bytes=MAX_BODY)) as c:
        resp = await c.post("/v1/workloads", json={"id": "known", "kind": "training"})
        assert resp.status == 201
        yield c


async def row_counts(settings: Settings) -> dict[str, int]:
    engine = create_engine(settings.database_url)
    try:
        async with reading(engine) as conn:
            return {
                t.name: (await conn.execute(select(func.count()).select_from(t))).scalar_one()
                for t in TABLES
            }
    finally:
        await engine.dispose()


BAD_REGISTRATIONS: list[tuple[str, bytes, int, str, str]] = [
    # (case, raw body, status, error, field)
    ("malformed json", b'{"id": "a", "kind": ', 400, "malformed_json", "body"),
    ("empty body", b"", 400, "malformed_json", "body"),
    ("array body", b'[{"id": "a", "kind": "training"}]', 422, "invalid_body", "body"),
    ("string body", b'"training"', 422, "invalid_body", "body"),
    (
        "unknown field",
        b'{"id": "a", "kind": "training", "owner": "x"}',
        422,
        "unknown_field",
        "owner",
    ),
    ("missing id", b'{"kind": "training"}', 422, "missing_field", "id"),
    ("missing kind", b'{"id": "a"}', 422, "missing_field", "kind"),
    ("id wrong type", b'{"id": 7, "kind": "training"}', 422, "invalid_type", "id"),
    ("id empty", b'{"id": "", "kind": "training"}', 422, "invalid_value", "id"),
    ("id bad chars", b'{"id": "a/b", "kind": "training"}', 422, "invalid_value", "id"),
    (
        "id too long",
        b'{"id": "' + b"a" * 201 + b'", "kind": "training"}',
        422,
        "invalid_value",
        "id",
    ),
    ("unknown kind", b'{"id": "a", "kind": "batch"}', 422, "invalid_value", "kind"),
    ("kind wrong type", b'{"id": "a", "kind": ["training"]}', 422, "invalid_type", "kind"),
    (
        "labels not object",
        b'{"id": "a", "kind": "training", "labels": ["x"]}',
        422,
        "invalid_type",
        "labels",
    ),
    (
        "label value not str",
        b'{"id": "a", "kind": "training", "labels": {"n": 1}}',
        422,
        "invalid_type",
        "labels.n",
    ),
    (
        "label key bad",
        b'{"id": "a", "kind": "training", "labels": {"a:b": "c"}}',
        422,
        "invalid_value",
        "labels.a:b",
    ),
    (
        "status_url wrong type",
        b'{"id": "a", "kind": "training", "status_url": 5}',
        422,
        "invalid_type",
        "status_url",
    ),
    (
        "status_url scheme",
        b'{"id": "a", "kind": "training", "status_url": "file:///etc/passwd"}',
        422,
        "unsafe_status_url",
        "status_url",
    ),
    (
        "status_url outside allow-list",
        b'{"id": "a", "kind": "training", "status_url": "http://8.8.8.8/status"}',
        422,
        "unsafe_status_url",
        "status_url",
    ),
    (
        "oversize body",
        b'{"id": "a", "kind": "training", "labels": {"x": "' + b"y" * MAX_BODY + b'"}}',
        413,
        "body_too_large",
        "body",
    ),
]

BAD_TRANSITIONS: list[tuple[str, bytes, int, str, str]] = [
    ("malformed json", b"{to: RUNNING}", 400, "malformed_json", "body"),
    ("null body", b"null", 422, "invalid_body", "body"),
    ("unknown field", b'{"to": "RUNNING", "seq": 3}', 422, "unknown_field", "seq"),
    ("missing to", b'{"reason": "x"}', 422, "missing_field", "to"),
    ("to wrong type", b'{"to": 1}', 422, "invalid_type", "to"),
    ("unknown state", b'{"to": "running"}', 422, "invalid_value", "to"),
    ("reason wrong type", b'{"to": "RUNNING", "reason": {"a": 1}}', 422, "invalid_type", "reason"),
    (
        "reason too long",
        b'{"to": "RUNNING", "reason": "' + b"r" * 1001 + b'"}',
        422,
        "invalid_value",
        "reason",
    ),
    (
        "oversize body",
        b'{"to": "RUNNING", "reason": "' + b"r" * (MAX_BODY + 10) + b'"}',
        413,
        "body_too_large",
        "body",
    ),
]

BAD_QUERIES: list[tuple[str, str, str]] = [
    # (case, query string, field)
    ("limit not a number", "limit=abc", "limit"),
    ("limit zero", "limit=0", "limit"),
    ("limit too big", "limit=501", "limit"),
    ("unknown kind", "kind=nope", "kind"),
    ("unknown state", "state=running", "state"),
    ("stale not a bool", "stale=maybe", "stale"),
    ("label without colon", "label=owner", "label"),
    ("label empty key", "label=:x", "label"),
    ("bad cursor", "cursor=!!!not-base64", "cursor"),
    ("forged cursor", "cursor=aGVsbG8", "cursor"),
    ("unknown parameter", "offset=10", "offset"),
    ("repeated limit", "limit=1&limit=2", "limit"),
]


def _check(body: dict[str, Any], error: str, field: str) -> None:
    assert body["error"] == error, body
    assert body["field"] == field, body
    assert isinstance(body["message"], str) and body["message"]


@pytest.mark.parametrize(
    "case,raw,status,error,field", BAD_REGISTRATIONS, ids=[c[0] for c in BAD_REGISTRATIONS]
)
async def test_bad_registration_body(
    client: TestClient[Any, Any],
    settings: Settings,
    case: str,
    raw: bytes,
    status: int,
    error: str,
    field: str,
) -> None:
    before = await row_counts(settings)
    resp = await client.post(
        "/v1/workloads", data=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    _check(await resp.json(), error, field)
    assert await row_counts(settings) == before


@pytest.mark.parametrize(
    "case,raw,status,error,field", BAD_TRANSITIONS, ids=[c[0] for c in BAD_TRANSITIONS]
)
async def test_bad_transition_body(
    client: TestClient[Any, Any],
    settings: Settings,
    case: str,
    raw: bytes,
    status: int,
    error: str,
    field: str,
) -> None:
    before = await row_counts(settings)
    resp = await client.post(
        "/v1/workloads/known/transitions", data=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status == status, await resp.text()
    _check(await resp.json(), error, field)
    assert await row_counts(settings) == before


@pytest.mark.parametrize("case,query,field", BAD_QUERIES, ids=[c[0] for c in BAD_QUERIES])
async def test_bad_list_query(
    client: TestClient[Any, Any], case: str, query: str, field: str
) -> None:
    resp = await client.get(f"/v1/workloads?{query}")
    assert resp.status == 400, await resp.text()
    _check(await resp.json(), "invalid_query", field)


@pytest.mark.parametrize(
    "query,field",
    [("after=x", "after"), ("after=-1", "after"), ("limit=abc", "limit"), ("since=1", "since")],
)
async def test_bad_history_query(client: TestClient[Any, Any], query: str, field: str) -> None:
    resp = await client.get(f"/v1/workloads/known/transitions?{query}")
    assert resp.status == 400
    _check(await resp.json(), "invalid_query", field)


async def test_chunked_oversize_body_is_413_without_content_length(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    async def chunks() -> Any:
        yield b'{"id": "chunky", "kind": "training", "labels": {"x": "'
        for _ in range(10):
            yield b"z" * 1024
        yield b'"}}'

    before = await row_counts(settings)
    resp = await client.post(
        "/v1/workloads", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    _check(await resp.json(), "body_too_large", "body")
    assert await row_counts(settings) == before


async def test_unknown_route_and_method_are_json(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/nothing-here")
    assert resp.status == 404 and resp.content_type == "application/json"
    resp = await client.put("/v1/workloads/known")
    assert resp.status == 405 and resp.content_type == "application/json"
