"""Every JSON route the route table gives a response model answers, for real, what that model
says: a running app (real Redis, real SQLite and PostgreSQL, loopback HTTP) is driven through a
workload's life, and each answer must validate against its model AND come back unchanged from
it (so a field the handler adds, drops or retypes fails here, not in a client). A route with a
model that the walk does not reach fails the test: the document cannot drift from the handlers
unseen, and the test cannot pass vacuously."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from pydantic import BaseModel
from sqlalchemy import update

from statusd.api.operations import OPERATIONS, Area, Operation
from statusd.app_keys import RUNTIME
from statusd.db import transaction
from statusd.models import OutboxEntry
from statusd.settings import Settings
from tests.support.api_client import api_client

_O = OutboxEntry.__table__  # type: ignore[attr-defined]
Route = tuple[str, str]  # (METHOD, path template), as in the route table

MODELLED: dict[Route, Operation] = {
    (op.method, op.path): op for op in OPERATIONS if not isinstance(op.answer, str)
}


class Walk:
    """Sends requests, keeps every answer under its route template."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.answers: dict[Route, list[Any]] = defaultdict(list)

    async def call(self, method: str, template: str, path: str | None = None, **kwargs: Any) -> Any:
        op = MODELLED[(method, template)]
        resp = await self.client.request(method, path or template, **kwargs)
        assert resp.status == op.ok, (method, path or template, resp.status, await resp.text())
        assert resp.content_type == "application/json", (method, template, resp.content_type)
        body = await resp.json()
        self.answers[(method, template)].append(body)
        return body


async def walk_a_workloads_life(walk: Walk) -> None:
    """Register, heartbeat (single and batch), transition (applied and refused), silence, report,
    deregister: every modelled route at least once, some twice (before and after deregistration)."""
    await walk.call("GET", "/healthz")
    await walk.call("GET", "/readyz")
    labels = {"team": "vision"}
    registered = await walk.call(
        "POST", "/v1/workloads", json={"id": "train-7", "kind": "training", "labels": labels}
    )
    token = registered["heartbeat_token"]
    # Never heard from and past STATUSD_START_TIMEOUT: an item of the stale report.
    await walk.call("POST", "/v1/workloads", json={"id": "nb-quiet", "kind": "notebook"})
    await walk.call(
        "POST",
        "/v1/heartbeats",
        json={"workload_id": "train-7", "status": "RUNNING", "seq": 1, "detail": "epoch 1"},
        headers={"Authorization": f"Bearer {token}"},
    )
    batch = await walk.call(
        "POST",
        "/v1/heartbeats:batch",
        json={
            "items": [
                {"token": token, "workload_id": "train-7", "status": "RUNNING", "seq": 2},
                {"workload_id": "train-7", "status": "RUNNING", "seq": 3},  # 401: no token
                {"token": token, "workload_id": "train-7", "status": "READY", "seq": 3},  # 422
            ]
        },
        headers={"Authorization": ""},
    )
    assert [r["status"] for r in batch["results"]] == [202, 401, 422]
    registered_many = await walk.call(
        "POST",
        "/v1/workloads:batch",
        json={
            "items": [
                {"id": "dep-1", "kind": "deployment", "labels": {"team": "vision"}},
                {"id": "train-7", "kind": "training"},  # 409: registered above
                {"id": "dep-2", "kind": "rocket"},  # 422
            ]
        },
    )
    assert [r["status"] for r in registered_many["results"]] == [201, 409, 422]
    await walk.call("GET", "/v1/workloads", params={"label": "team:vision"})
    await walk.call("GET", "/v1/workloads/{id}", "/v1/workloads/train-7")
    await walk.call(
        "POST",
        "/v1/workloads/{id}/transitions",
        "/v1/workloads/train-7/transitions",
        json={"to": "RUNNING", "reason": "started by the backend"},
    )
    await walk.call(
        "POST",
        "/v1/workloads/{id}/transitions",
        "/v1/workloads/train-7/transitions",
        json={"to": "RUNNING"},  # the same state again: unchanged, no transition
    )
    refused = await walk.client.post(
        "/v1/workloads/train-7/transitions", json={"to": "PENDING"}
    )  # backward: 409, recorded as a refused observation for the story
    assert refused.status == 409, await refused.text()
    await walk.call("GET", "/v1/workloads/{id}/transitions", "/v1/workloads/train-7/transitions")
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    silence = await walk.call(
        "POST",
        "/v1/silences",
        json={"match": {"kind": "training", "label": "team:vision"}, "until": until, "reason": "x"},
    )
    await walk.call("GET", "/v1/silences")
    window = await walk.call(
        "POST",
        "/v1/maintenances",
        json={
            "match": {"kind": "training"},
            "schedule": "*/2 * * * *",
            "duration_s": 30,
            "timezone": "Asia/Kolkata",
            "reason": "x",
        },
    )
    await walk.call("GET", "/v1/maintenances")
    await walk.call("GET", "/v1/maintenances/{id}", f"/v1/maintenances/{window['id']}")
    await asyncio.sleep(0.06)  # nb-quiet: past STATUSD_START_TIMEOUT, never heard from
    await walk.call("GET", "/v1/reports/stale")
    await walk.call("GET", "/v1/reports/summary")
    await walk.call("GET", "/v1/reports/transitions")
    await walk.call("GET", "/v1/reports/workloads/{id}", "/v1/reports/workloads/train-7")
    await walk.call("GET", "/v1/reports/history", params={"window": "10m", "step": "1m"})
    await walk.call("GET", "/v1/reports/selfwatch")
    await walk.call("GET", "/v1/reports/availability", params={"group_by": "label:team"})
    await walk.call("POST", "/v1/prune", json={"dry_run": True})
    await walk.call("DELETE", "/v1/silences/{id}", f"/v1/silences/{silence['id']}")
    await walk.call("DELETE", "/v1/maintenances/{id}", f"/v1/maintenances/{window['id']}")
    await walk.call("DELETE", "/v1/workloads/{id}", "/v1/workloads/train-7")
    # A deregistered workload's story is built from its kept row (another code path).
    await walk.call("GET", "/v1/reports/workloads/{id}", "/v1/reports/workloads/train-7")


def comes_back_unchanged(model: type[BaseModel], body: Any) -> None:
    parsed = model.model_validate(body)
    # exclude_unset: a key the answer leaves out (an optional one) stays out; every other key
    # must survive the model with its value, so an unknown or retyped field shows here.
    assert parsed.model_dump(mode="json", exclude_unset=True) == body, model.__name__


async def walk_keys_and_audit(walk: Walk) -> None:
    """Mint a key (labels, expiry), list, revoke it; read the audit trail the walk left."""
    created = await walk.call(
        "POST",
        "/v1/keys",
        json={"name": "dash", "scope": "read", "labels": {"team": "vision"}, "expires_in": "12h"},
    )
    await walk.call("GET", "/v1/keys")
    await walk.call("DELETE", "/v1/keys/{id}", f"/v1/keys/{created['id']}")
    audit = await walk.call("GET", "/v1/audit")
    assert audit["items"], "the walk's registrations and key changes are audited"


async def test_every_modelled_json_answer_matches_its_model(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(start_timeout=0.05)
    async with api_client(settings, consumers=0) as client:
        rt = client.server.app[RUNTIME]
        walk = Walk(client)
        # The story's sync section names the newest error: give a main-DB row one, as a refusing
        # main API leaves it (the drain itself is tested in tests/test_sync_*.py).
        await walk.call("POST", "/v1/workloads", json={"id": "train-0", "kind": "training"})
        await walk.call(
            "POST",
            "/v1/workloads/{id}/transitions",
            "/v1/workloads/train-0/transitions",
            json={"to": "RUNNING"},
        )
        async with transaction(rt.engine) as conn:
            await conn.execute(
                update(_O)
                .where(_O.c.workload_id == "train-0")
                .values(last_error="HTTP 503: try later", attempts=1)
            )
        await walk.call("GET", "/v1/reports/workloads/{id}", "/v1/reports/workloads/train-0")
        await walk_a_workloads_life(walk)
        await walk_keys_and_audit(walk)

    missing = sorted(set(MODELLED) - set(walk.answers))
    assert not missing, f"routes with a response model that no real answer exercised: {missing}"
    assert {op.area for op in MODELLED.values()} == set(Area)  # no area without a model
    for route, bodies in walk.answers.items():
        for body in bodies:
            answer = MODELLED[route].answer
            assert not isinstance(answer, str)
            comes_back_unchanged(answer, body)
    stale = walk.answers[("GET", "/v1/reports/stale")][0]
    assert "nb-quiet" in {i["id"] for i in stale["items"]}  # StaleItem met a real item
    story = walk.answers[("GET", "/v1/reports/workloads/{id}")]
    assert story[0]["sync"]["last_error"] is not None
    assert story[1]["refused"] and story[1]["timeline"]
    assert story[2]["deregistered_at"] is not None
