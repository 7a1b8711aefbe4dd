"""Every operation of the OpenAPI document a real `statusd serve` serves has a method in both
API clients (statusd_client.api.routes.ROUTES), or is named as another party's route
(NOT_FOR_THIS_CLIENT: heartbeats, metrics, the status page). A route added to statusd without
a client method fails here."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from statusd_client import (
    AsyncStatusdApi,
    Forbidden,
    Registration,
    StatusdApi,
    Unauthorized,
)
from statusd_client.api.routes import NOT_FOR_THIS_CLIENT, ROUTES

from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN
from tests.support.client_stack import running_serve, wait_for


def route(name: str) -> tuple[str, str]:
    return ROUTES[name].method, ROUTES[name].path


BATCH = route("register_many")
# Routes the client already has methods for whose statusd side may not be in this statusd yet
# (batch registration, keys and audit, retention and availability): absent, their tests skip.
NEWER = {BATCH, *map(route, ("create_key", "keys", "revoke_key", "audit", "prune", "availability"))}


@pytest.fixture
def served(settings: Settings, tmp_path: Path) -> Iterator[tuple[StatusdApi, set[tuple[str, str]]]]:
    with running_serve(settings, tmp_path) as server, StatusdApi(server.url, TEST_API_TOKEN) as api:
        yield (
            api,
            {
                (method.upper(), path)
                for path, operations in api.openapi()["paths"].items()
                for method in operations
            },
        )


def test_every_served_operation_has_a_client_method(
    served: tuple[StatusdApi, set[tuple[str, str]]],
) -> None:
    _, operations = served
    assert len(operations) > 20, operations
    by_route = {(r.method, r.path): name for name, r in ROUTES.items()}
    missing = sorted(
        op for op in operations if op not in by_route and op not in NOT_FOR_THIS_CLIENT
    )
    assert not missing, f"operations with no client method: {missing}"
    for name in by_route.values():
        for client in (StatusdApi, AsyncStatusdApi):
            method = getattr(client, name, None)
            assert callable(method), f"{client.__name__} has no {name}()"
        is_async = inspect.iscoroutinefunction(getattr(AsyncStatusdApi, name)) or (
            inspect.isasyncgenfunction(getattr(AsyncStatusdApi, name))
        )
        assert is_async, f"AsyncStatusdApi.{name} is not async"
    # The other way round: the client calls nothing statusd does not serve (the newer routes
    # excepted until this statusd has them; register_many registers one by one meanwhile).
    stale = sorted(r for r in by_route if r not in operations and r not in NEWER)
    assert not stale, f"client routes statusd does not serve: {stale}"
    assert not (set(by_route) & set(NOT_FOR_THIS_CLIENT))


def test_register_many_uses_the_batch_route_when_served(
    served: tuple[StatusdApi, set[tuple[str, str]]],
) -> None:
    api, operations = served
    if BATCH not in operations:
        pytest.skip("this statusd does not serve POST /v1/workloads:batch")
    results = api.register_many(
        [
            Registration("batch-1", "training"),
            Registration("batch-1", "training"),
            Registration("batch-2", "robot"),
            Registration("batch-3", "notebook", labels={"team": "vision"}),
        ]
    )
    assert [r.status for r in results] == [201, 409, 422, 201]
    assert results[0].unwrap().workload.id == "batch-1"
    assert results[3].unwrap().workload.labels == {"team": "vision"}
    assert results[3].unwrap().heartbeat_token


def test_keys_and_the_audit_trail_when_served(
    served: tuple[StatusdApi, set[tuple[str, str]]],
) -> None:
    api, operations = served
    if not {route("create_key"), route("audit")} <= operations:
        pytest.skip("this statusd does not serve /v1/keys and /v1/audit")
    api.register("keyed-1", "training")
    created = api.create_key("dashboard", "read", expires_in="1h")
    assert created.scope == "read" and created.key and created.expires_at is not None
    with StatusdApi(api.url, created.key) as reader:
        assert reader.get("keyed-1").id == "keyed-1"
        with pytest.raises(Forbidden):
            reader.register("keyed-2", "training")
        listed = {key.id: key for key in api.keys()}
        assert listed[created.id].name == "dashboard" and listed[created.id].revoked_at is None
        assert api.revoke_key(created.id).revoked_at is not None

        def refused() -> bool:
            try:
                reader.get("keyed-1")
            except Unauthorized:
                return True
            return False

        wait_for(refused, bool, within=10, what="the revoked key refused")
    trail = list(api.audit(page_size=2))
    assert [e.id for e in trail] == sorted(e.id for e in trail)
    assert any(e.outcome == 403 and e.actor_id == created.id for e in trail), trail


def test_availability_and_prune_when_served(
    served: tuple[StatusdApi, set[tuple[str, str]]],
) -> None:
    api, operations = served
    if not {route("availability"), route("prune")} <= operations:
        pytest.skip("this statusd does not serve /v1/reports/availability and /v1/prune")
    api.register("avail-1", "deployment")
    api.transition("avail-1", "READY")
    report = api.availability(ids=["avail-1"])
    assert report.data, report
    csv = api.availability_csv(ids=["avail-1"])
    assert "avail-1" in csv
    assert api.prune(dry_run=True)["dry_run"] is True
