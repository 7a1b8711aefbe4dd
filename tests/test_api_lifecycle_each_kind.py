"""Each kind's lifecycle driven through the status API, on SQLite and PostgreSQL, with history."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from statusd.db import create_engine, reading
from statusd.models import RefusedObservation
from statusd.settings import Settings
from tests.support.api_client import api_client

R = RefusedObservation.__table__  # type: ignore[attr-defined]

# Forward paths through each kind's table, skipping states on purpose (PENDING -> RUNNING etc.).
PATHS = {
    "training": ["STARTING", "RUNNING", "STOPPING", "STOPPED"],
    "notebook": ["STARTING", "READY", "IDLE", "READY", "STOPPING", "STOPPED"],
    "deployment": ["DEPLOYING", "READY", "DEGRADED", "READY", "STOPPING", "FAILED"],
}


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(make_settings()) as c:
        yield c


async def register(
    client: TestClient[Any, Any], wid: str, kind: str, **extra: Any
) -> dict[str, Any]:
    resp = await client.post("/v1/workloads", json={"id": wid, "kind": kind, **extra})
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def move(
    client: TestClient[Any, Any], wid: str, to: str, reason: str = "test"
) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/v1/workloads/{wid}/transitions", json={"to": to, "reason": reason})
    return resp.status, dict(await resp.json())


async def history(client: TestClient[Any, Any], wid: str) -> list[tuple[str, str, str]]:
    resp = await client.get(f"/v1/workloads/{wid}/transitions")
    assert resp.status == 200
    return [(t["from"], t["to"], t["source"]) for t in (await resp.json())["items"]]


async def refused_rows(settings: Settings, wid: str) -> list[tuple[str, str, str, str]]:
    engine = create_engine(settings.database_url)
    try:
        async with reading(engine) as conn:
            rows = await conn.execute(
                select(R.c.current_state, R.c.requested_state, R.c.source, R.c.rule)
                .where(R.c.workload_id == wid)
                .order_by(R.c.id)
            )
            return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("kind", sorted(PATHS))
async def test_each_kind_walks_its_lifecycle_with_history(
    client: TestClient[Any, Any], kind: str
) -> None:
    wid = f"{kind}-1"
    created = await register(client, wid, kind, labels={"owner": "ana"})
    assert created["state"] == "PENDING" and created["kind"] == kind and created["generation"] == 1
    assert created["heartbeat_token"].startswith("hb1.")
    expected, previous = [], "PENDING"
    for to in PATHS[kind]:
        status, body = await move(client, wid, to, reason=f"to {to}")
        assert status == 200, body
        assert body["outcome"] == "applied" and body["state"] == to
        assert body["transition"]["from"] == previous and body["transition"]["source"] == "api"
        expected.append((previous, to, "api"))
        previous = to
    assert await history(client, wid) == expected
    shown = await (await client.get(f"/v1/workloads/{wid}")).json()
    assert shown["state"] == PATHS[kind][-1] and shown["labels"] == {"owner": "ana"}
    assert shown["stale"] is False  # final states are never stale
    assert shown["synced"] is None  # no main API configured: nothing to be in sync with


async def test_forward_skip_is_allowed_and_repeat_is_unchanged(
    client: TestClient[Any, Any],
) -> None:
    await register(client, "short-training", "training")
    status, body = await move(client, "short-training", "SUCCEEDED")
    assert (status, body["outcome"], body["state"]) == (200, "applied", "SUCCEEDED")
    await register(client, "nb", "notebook")
    assert (await move(client, "nb", "READY"))[0] == 200
    status, body = await move(client, "nb", "READY")
    assert (status, body["outcome"], body["transition"]) == (200, "unchanged", None)
    assert await history(client, "nb") == [("PENDING", "READY", "api")]


async def test_post_answers_the_same_transition_as_the_history(
    client: TestClient[Any, Any],
) -> None:
    """One serializer: the POST response is the history row, generation and actor included."""
    await register(client, "same", "training")
    status, body = await move(client, "same", "RUNNING", reason="kick")
    assert status == 200, body
    items = (await (await client.get("/v1/workloads/same/transitions")).json())["items"]
    assert body["transition"] == items[-1]
    assert body["transition"]["generation"] == 1 and body["transition"]["actor"] == "api"


async def test_backward_and_after_final_are_409_and_recorded(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    # `client` was built from make_settings() with the same database as `settings`.
    await register(client, "t", "training")
    assert (await move(client, "t", "RUNNING"))[0] == 200
    status, body = await move(client, "t", "STARTING", reason="user clicked")
    assert status == 409 and body["error"] == "transition_refused" and "backward" in body["rule"]
    assert (await move(client, "t", "FAILED"))[0] == 200
    status, body = await move(client, "t", "RUNNING")
    assert status == 409 and body["rule"].startswith("final")
    assert await history(client, "t") == [
        ("PENDING", "RUNNING", "api"),
        ("RUNNING", "FAILED", "api"),
    ]
    refused = await refused_rows(settings, "t")
    assert [(c, r, s) for c, r, s, _ in refused] == [
        ("RUNNING", "STARTING", "api"),
        ("FAILED", "RUNNING", "api"),
    ]


async def test_api_cannot_claim_contact_states_or_foreign_states(
    client: TestClient[Any, Any],
) -> None:
    await register(client, "d", "deployment")
    for state in ("UNREACHABLE", "LOST"):
        status, body = await move(client, "d", state)
        assert status == 409 and body["rule"].startswith("contact-state"), body
    status, body = await move(client, "d", "RUNNING")  # a training state: not in deployment's table
    assert status == 409 and body["rule"].startswith("unknown-state")
    assert await history(client, "d") == []


async def test_unknown_workload_is_404(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/v1/workloads/nope")).status == 404
    assert (await client.delete("/v1/workloads/nope")).status == 404
    assert (await client.get("/v1/workloads/nope/transitions")).status == 404
    resp = await client.post("/v1/workloads/nope/transitions", json={"to": "RUNNING"})
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"


async def test_duplicate_registration_is_409(client: TestClient[Any, Any]) -> None:
    await register(client, "dup", "training")
    resp = await client.post("/v1/workloads", json={"id": "dup", "kind": "notebook"})
    assert resp.status == 409 and (await resp.json())["error"] == "conflict"
