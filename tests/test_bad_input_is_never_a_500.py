"""Each 500 found by probing from outside is a 4xx JSON naming the problem, writing nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from statusd.settings import Settings
from tests.support.api_client import api_client

INT64_OVERFLOW = str(2**63)  # one past the biggest BIGINT / SQLite INTEGER


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(make_settings()) as c:
        resp = await c.post("/v1/workloads", json={"id": "known", "kind": "training"})
        assert resp.status == 201
        yield c


async def assert_json_error(resp: Any, status: int, field: str | None) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert body["error"] and body["message"]
    if field is not None:
        assert body.get("field") == field, body
    return body


async def test_login_multipart_without_boundary_is_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/login", data=b"token=x", headers={"Content-Type": "multipart/form-data"}
    )
    await assert_json_error(resp, 400, "body")


async def test_login_multipart_with_a_bad_part_header_is_400(client: TestClient[Any, Any]) -> None:
    """Found by the generated-input test: aiohttp's InvalidHeader escaped as a 500."""
    resp = await client.post(
        "/login",
        data=b"--b\r\n[{}, []]--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    await assert_json_error(resp, 400, "body")


async def test_login_multipart_with_a_broken_body_is_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/login",
        data=b"--b\r\nContent-Disposition: form-data; name=token\r\n\r\nx",  # no closing boundary
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert resp.status in (400, 401), await resp.text()


BAD_STATUS_URLS = [
    "http://[::1",  # unclosed IPv6 bracket: urlsplit raises ValueError
    "http://[:::1]/",  # bracketed, but not an IPv6 address
    "http://[127.0.0.1]/",  # an IPv4 address in brackets is not a URL host
    "http://" + "a" * 64 + ".example/status",  # a DNS label is at most 63 octets (UnicodeError)
    "http://" + ".".join(["a" * 60] * 5) + "/status",  # a name is at most 253 octets
    "http://a..b/status",  # empty label
    "http://exa mple.test/status",
    "http://b\u00fccher.invalid/status",  # an IDN: encoded, then does not resolve
    "http://999.1.1.1/status",  # not an IPv4 address, and not a name that resolves
]


@pytest.mark.parametrize("url", BAD_STATUS_URLS)
async def test_unparseable_status_url_is_422(client: TestClient[Any, Any], url: str) -> None:
    resp = await client.post(
        "/v1/workloads", json={"id": "w-url", "kind": "training", "status_url": url}
    )
    await assert_json_error(resp, 422, "status_url")
    assert (await client.get("/v1/workloads/w-url")).status == 404  # nothing written


@pytest.mark.parametrize(
    "path,field",
    [
        (f"/v1/workloads/known/transitions?after={INT64_OVERFLOW}", "after"),
        (f"/v1/workloads/known/transitions?after=-{INT64_OVERFLOW}", "after"),
        (f"/v1/workloads/known/transitions?after={'9' * 5000}", "after"),
        ("/v1/workloads/known/transitions?after=\u0661\u0662", "after"),  # Arabic-Indic digits
        (f"/v1/workloads/known/transitions?limit={INT64_OVERFLOW}", "limit"),
        (f"/v1/workloads?limit={INT64_OVERFLOW}", "limit"),
        ("/v1/reports/transitions?limit=\u00b2", "limit"),  # str.isdigit() says yes, int() says no
        (f"/v1/reports/transitions?limit={INT64_OVERFLOW}", "limit"),
        (f"/v1/reports/transitions?last_event_id={INT64_OVERFLOW}", "last_event_id"),
        (f"/v1/events?last_event_id={INT64_OVERFLOW}", "last_event_id"),
        ("/v1/reports/stale?older_than=nan", "older_than"),
        ("/v1/reports/stale?older_than=1e999", "older_than"),
    ],
)
async def test_out_of_range_numbers_in_the_query_are_400(
    client: TestClient[Any, Any], path: str, field: str
) -> None:
    await assert_json_error(await client.get(path), 400, field)


async def test_biggest_int64_cursor_is_accepted(client: TestClient[Any, Any]) -> None:
    resp = await client.get(f"/v1/workloads/known/transitions?after={2**63 - 1}")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["items"] == []


async def test_last_event_id_header_overflow_is_400(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/events", headers={"Last-Event-ID": INT64_OVERFLOW})
    await assert_json_error(resp, 400, "last_event_id")
