"""A status_url with CR/LF or any other control character is a 422 naming `status_url`, and
nothing is stored: the id stays free and registers cleanly afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from statusd.settings import Settings
from tests.support.api_client import api_client

BAD_URLS = [
    "http://127.0.0.1:8000/status\r\nX-Injected: 1",
    "http://127.0.0.1:8000/st\natus",
    "http://127.0.0.1:8000/\tstatus",
    "http://127.0.0.1:8000/status\x00",
    "http://127.0.0.1:8000/status\x7f",
    "http://127.0.0.1:8000/status\x85",  # C1 NEL
]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        yield c


@pytest.mark.parametrize("url", BAD_URLS)
async def test_control_characters_are_a_422_and_nothing_is_stored(
    client: TestClient[Any, Any], url: str
) -> None:
    refused = await client.post(
        "/v1/workloads", json={"id": "ctl-1", "kind": "training", "status_url": url}
    )
    assert refused.status == 422
    body = await refused.json()
    assert body["field"] == "status_url", body
    assert "control characters" in body["message"]
    assert (await client.get("/v1/workloads/ctl-1")).status == 404  # never stored
    clean = await client.post(
        "/v1/workloads",
        json={"id": "ctl-1", "kind": "training", "status_url": "http://127.0.0.1:8000/status"},
    )
    assert clean.status == 201
    assert (await clean.json())["generation"] == 1


async def test_the_document_states_the_rule(client: TestClient[Any, Any]) -> None:
    document = await (await client.get("/v1/openapi.json")).json()
    prop = document["components"]["schemas"]["RegisterRequest"]["properties"]["status_url"]
    assert prop["pattern"] == "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
