"""API keys for tests: minted over the API with the bootstrap token, used as Bearer headers."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.api_client import bearer


async def mint(
    client: TestClient[Any, Any],
    name: str,
    scope: str,
    labels: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """POST /v1/keys with the bootstrap token; the 201 body (id, key, name, scope, ...)."""
    body: dict[str, Any] = {"name": name, "scope": scope, **extra}
    if labels is not None:
        body["labels"] = labels
    resp = await client.post("/v1/keys", json=body)
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


def as_key(created: dict[str, Any]) -> dict[str, str]:
    """Headers that authenticate as this key (replacing the client's default bootstrap token)."""
    return bearer(str(created["key"]))
