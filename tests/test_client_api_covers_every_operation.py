"""Every operation of the OpenAPI document a real `statusd serve` serves has a method in both
API clients (statusd_client.api.routes.ROUTES), or is named as another party's route
(NOT_FOR_THIS_CLIENT: heartbeats, metrics, the status page). A route added to statusd without
a client method fails here."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from statusd_client import AsyncStatusdApi, Registration, StatusdApi
from statusd_client.api.routes import NOT_FOR_THIS_CLIENT, ROUTES

from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN
from tests.support.client_stack import running_serve

BATCH = (ROUTES["register_many"].method, ROUTES["register_many"].path)


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
    # The other way round: the client calls nothing statusd does not serve (the batch route
    # excepted until this statusd has it: register_many registers one by one meanwhile).
    stale = sorted(route for route in by_route if route not in operations and route != BATCH)
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
