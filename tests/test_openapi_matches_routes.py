"""The OpenAPI document at /v1/openapi.json and the aiohttp router agree, route for route."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from statusd.api.openapi import documented_routes, openapi_document
from statusd.app import create_app
from statusd.settings import Settings
from tests.support.api_client import api_client

DOCUMENT = openapi_document(500)
PATHS: dict[str, dict[str, Any]] = DOCUMENT["paths"]


def registered_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the app serves (HEAD and wildcard excluded)."""
    found = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = (
            info.get("formatter")
            or info.get("path")
            or (route.resource.canonical if route.resource else "")
        )
        found.add((route.method, path))
    return found


def test_every_registered_route_is_documented(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(), consumers=0)
    missing = registered_routes(app) - documented_routes()
    assert not missing, f"routes served but not in statusd/api/openapi.py: {sorted(missing)}"


# Every area is built: each must be documented and served in full. Listing them here means a
# whole area dropped from the document (or from the router) fails, instead of passing vacuously.
AREAS = {"api", "ingest", "oncall"}


def test_every_documented_route_is_served(make_settings: Callable[..., Settings]) -> None:
    served = registered_routes(create_app(make_settings(), consumers=0))
    by_area: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path, ops in PATHS.items():
        for method, op in ops.items():
            by_area[op["x-statusd-area"]].add((method.upper(), path))
    assert set(by_area) == AREAS
    for area, routes in by_area.items():
        assert routes <= served, f"{area}: documented but not served: {sorted(routes - served)}"
        assert routes, area


def test_document_is_openapi_31_with_resolvable_refs() -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    schemas = DOCUMENT["components"]["schemas"]
    schemes = DOCUMENT["components"]["securitySchemes"]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                assert (
                    ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
                ), ref
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(DOCUMENT)
    for path, ops in PATHS.items():
        for method, op in ops.items():
            assert op["responses"], (method, path)
            for requirement in op["security"]:
                assert set(requirement) <= set(schemes), (method, path)
            if "{id}" in path:
                assert any(
                    p.get("name") == "id" and p["in"] == "path" for p in op.get("parameters", [])
                ), path


async def test_served_document_is_generated_with_the_apps_settings(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(max_batch_items=37)
    async with api_client(settings) as client:
        resp = await client.get("/v1/openapi.json")
        assert resp.status == 200 and resp.content_type == "application/json"
        served = await resp.json()
    assert served == openapi_document(37)
    batch = served["components"]["schemas"]["HeartbeatBatch"]["properties"]["items"]
    assert batch["maxItems"] == 37  # STATUSD_MAX_BATCH_ITEMS, not a constant
