"""Ingest refuses what it must (401/403/4xx JSON naming the problem) and appends NOTHING for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from statusd import tokens
from statusd.keys import Keys
from statusd.lifecycle import Kind
from statusd.settings import Settings
from tests.conftest import TEST_SECRET
from tests.support.api_client import api_client
from tests.support.ingest_flow import all_entries, register, shard_stream, stream_length

MAX_BODY = 2048


@pytest.fixture
async def app(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str], Keys]]:
    settings = make_settings(max_body_bytes=MAX_BODY, max_batch_items=10)
    async with api_client(settings, consumers=0) as client:
        toks = {
            wid: await register(client, wid, kind)
            for wid, kind in (("t1", "training"), ("n1", "notebook"))
        }
        yield client, toks, Keys(settings.redis_prefix)


def body(**fields: Any) -> bytes:
    return orjson.dumps({"workload_id": "t1", "status": "RUNNING", "seq": 1, **fields})


BAD_BODIES: list[tuple[str, bytes, int, str, str | None]] = [
    # (case, raw body, status, error, field)
    ("malformed json", b'{"workload_id": "t1", "status": ', 400, "malformed_json", "body"),
    ("empty body", b"", 400, "malformed_json", "body"),
    (
        "array",
        b'[{"workload_id": "t1", "status": "RUNNING", "seq": 1}]',
        422,
        "invalid_body",
        "body",
    ),
    ("number", b"7", 422, "invalid_body", "body"),
    ("unknown field", body(extra=1), 422, "unknown_field", "extra"),
    ("token in single body", body(token="x"), 422, "unknown_field", "token"),
    (
        "missing workload_id",
        b'{"status": "RUNNING", "seq": 1}',
        422,
        "missing_field",
        "workload_id",
    ),
    ("missing status", b'{"workload_id": "t1", "seq": 1}', 422, "missing_field", "status"),
    ("missing seq", b'{"workload_id": "t1", "status": "RUNNING"}', 422, "missing_field", "seq"),
    ("workload_id wrong type", body(workload_id=1), 422, "invalid_type", "workload_id"),
    ("status wrong type", body(status=["RUNNING"]), 422, "invalid_type", "status"),
    ("seq string", body(seq="1"), 422, "invalid_type", "seq"),
    ("seq float", body(seq=1.5), 422, "invalid_type", "seq"),
    ("seq bool", body(seq=True), 422, "invalid_type", "seq"),
    ("seq negative", body(seq=-1), 422, "invalid_value", "seq"),
    (
        "seq too big",
        b'{"workload_id": "t1", "status": "RUNNING", "seq": 9223372036854775808}',
        422,
        "invalid_value",
        "seq",
    ),
    ("detail wrong type", body(detail=5), 422, "invalid_type", "detail"),
    ("detail too long", body(detail="x" * 1025), 422, "invalid_value", "detail"),
    ("status not a state", body(status="DANCING"), 422, "invalid_value", "status"),
    ("status of another kind", body(status="READY"), 422, "invalid_value", "status"),
    ("sweeper-only status", body(status="LOST"), 422, "invalid_value", "status"),
    ("oversize", body(detail="x" * 1000, pad="y" * MAX_BODY), 413, "body_too_large", None),
]


@pytest.mark.parametrize(
    ("case", "raw", "status", "error", "field"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_body_is_refused_and_nothing_is_appended(
    app: tuple[TestClient[Any, Any], dict[str, str], Keys],
    redis: Redis,
    case: str,
    raw: bytes,
    status: int,
    error: str,
    field: str | None,
) -> None:
    client, toks, keys = app
    before = await stream_length(redis, keys)
    resp = await client.post(
        "/v1/heartbeats",
        data=raw,
        headers={"Authorization": f"Bearer {toks['t1']}", "Content-Type": "application/json"},
    )
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    doc = await resp.json()
    assert doc["error"] == error and doc["message"]
    assert doc.get("field") == field
    assert await stream_length(redis, keys) == before


async def test_tokens_missing_invalid_or_for_another_workload(
    app: tuple[TestClient[Any, Any], dict[str, str], Keys], redis: Redis
) -> None:
    client, toks, keys = app
    forged = tokens.issue(b"not-the-secret-" + b"z" * 20, "t1", Kind.TRAINING, 1)
    cases = [
        ({"Authorization": ""}, 401, "unauthorized"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "unauthorized"),
        ({"Authorization": "Bearer garbage"}, 401, "unauthorized"),
        ({"Authorization": f"Bearer {forged}"}, 401, "unauthorized"),
        ({"Authorization": f"Bearer {toks['n1']}"}, 403, "forbidden"),  # n1's token reporting t1
    ]
    for headers, status, error in cases:
        resp = await client.post("/v1/heartbeats", data=body(), headers=headers)
        assert resp.status == status, (headers, await resp.text())
        assert (await resp.json())["error"] == error
    assert await stream_length(redis, keys) == 0
    resp = await client.post(
        "/v1/heartbeats", data=body(), headers={"Authorization": f"Bearer {toks['t1']}"}
    )
    assert resp.status == 202
    assert (await resp.json()) == {"status": "accepted", "next_heartbeat_s": 10.0}  # TTL 30 / 3
    assert await stream_length(redis, keys) == 1


async def test_an_accepted_heartbeat_is_one_entry_plus_last_seen(
    app: tuple[TestClient[Any, Any], dict[str, str], Keys], redis: Redis
) -> None:
    client, toks, keys = app
    assert await redis.zscore(keys.pending_since(keys.shard("t1")), "t1") is not None
    resp = await client.post(
        "/v1/heartbeats",
        data=body(seq=7, detail="epoch 3"),
        headers={"Authorization": f"Bearer {toks['t1']}"},
    )
    assert resp.status == 202
    [(_, fields)] = await redis.xrange(shard_stream(keys, "t1"))
    assert fields[b"workload_id"] == b"t1" and fields[b"status"] == b"RUNNING"
    assert (
        fields[b"seq"] == b"7" and fields[b"generation"] == b"1" and fields[b"detail"] == b"epoch 3"
    )
    assert int(fields[b"received_at"]) > 0
    assert await redis.zscore(keys.last_seen(keys.shard("t1")), "t1") is not None
    assert await redis.zscore(keys.pending_since(keys.shard("t1")), "t1") is None


async def test_batch_answers_each_item_and_appends_only_the_good_ones(
    app: tuple[TestClient[Any, Any], dict[str, str], Keys], redis: Redis
) -> None:
    client, toks, keys = app
    forged = tokens.issue(TEST_SECRET.encode()[::-1], "t1", Kind.TRAINING, 1)
    items = [
        {"token": toks["t1"], "workload_id": "t1", "status": "RUNNING", "seq": 1},  # 202
        {
            "token": toks["n1"],
            "workload_id": "n1",
            "status": "READY",
            "seq": 1,
            "detail": "ok",
        },  # 202
        {"workload_id": "t1", "status": "RUNNING", "seq": 2},  # 401 no token
        {"token": forged, "workload_id": "t1", "status": "RUNNING", "seq": 2},  # 401 bad token
        {"token": toks["n1"], "workload_id": "t1", "status": "RUNNING", "seq": 2},  # 403
        {"token": toks["t1"], "workload_id": "t1", "status": "READY", "seq": 2},  # 422 status
        {"token": toks["t1"], "workload_id": "t1", "status": "RUNNING", "seq": -2},  # 422 seq
        {
            "token": toks["t1"],
            "workload_id": "t1",
            "status": "RUNNING",
            "seq": 2,
            "x": 1,
        },  # 422 field
        "not an object",  # 422
    ]
    resp = await client.post(
        "/v1/heartbeats:batch", json={"items": items}, headers={"Authorization": ""}
    )
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    got = [(r["status"], r.get("error"), r.get("field")) for r in doc["results"]]
    assert got == [
        (202, None, None),
        (202, None, None),
        (401, "unauthorized", "token"),
        (401, "unauthorized", None),
        (403, "forbidden", "workload_id"),
        (422, "invalid_value", "status"),
        (422, "invalid_value", "seq"),
        (422, "unknown_field", "x"),
        (422, "invalid_body", "body"),
    ]
    assert doc["accepted"] == 2 and doc["rejected"] == 7
    entries = await all_entries(redis, keys)
    assert [(f[b"workload_id"], f[b"status"]) for _, f in entries] == [
        (b"t1", b"RUNNING"),
        (b"n1", b"READY"),
    ]


BAD_BATCHES: list[tuple[str, bytes, int, str]] = [
    ("not json", b"{", 400, "malformed_json"),
    ("list", b"[]", 422, "invalid_body"),
    ("no items", b"{}", 422, "invalid_value"),
    ("empty items", b'{"items": []}', 422, "invalid_value"),
    ("items not list", b'{"items": {}}', 422, "invalid_value"),
    ("unknown top field", b'{"items": [], "node": "n"}', 422, "unknown_field"),
    ("too many items", orjson.dumps({"items": [{}] * 11}), 413, "body_too_large"),
    (
        "body over per-item cap",
        orjson.dumps({"items": [{"detail": "x" * (MAX_BODY + 10)}]}),
        413,
        "body_too_large",
    ),
]


@pytest.mark.parametrize(
    ("case", "raw", "status", "error"), BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES]
)
async def test_bad_batch_is_refused_whole(
    app: tuple[TestClient[Any, Any], dict[str, str], Keys],
    redis: Redis,
    case: str,
    raw: bytes,
    status: int,
    error: str,
) -> None:
    client, _, keys = app
    resp = await client.post(
        "/v1/heartbeats:batch", data=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status == status, await resp.text()
    assert (await resp.json())["error"] == error
    assert await stream_length(redis, keys) == 0


async def test_redis_down_answers_503_with_retry_after_never_500(
    make_settings: Callable[..., Settings], redis_server: str
) -> None:
    """Registration needs Redis too, so the token is issued directly; ingest points at a dead port."""
    from statusd.redis_runtime import free_port

    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", ingest_timeout=1.0)
    token = tokens.issue(TEST_SECRET.encode(), "t1", Kind.TRAINING, 1)
    async with api_client(settings, consumers=0) as client:
        for path, payload in (
            ("/v1/heartbeats", body()),
            (
                "/v1/heartbeats:batch",
                orjson.dumps({"items": [{"token": token, **orjson.loads(body())}]}),
            ),
        ):
            resp = await client.post(
                path, data=payload, headers={"Authorization": f"Bearer {token}"}
            )
            assert resp.status == 503, await resp.text()
            assert resp.headers["Retry-After"].isdigit()
            assert (await resp.json())["error"] == "redis_unavailable"
