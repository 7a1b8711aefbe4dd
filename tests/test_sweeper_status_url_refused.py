"""status_url is an SSRF risk: only http/https to allowed networks, checked after DNS, 422 at registration."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from statusd.errors import UnsafeStatusURL
from statusd.settings import DEFAULT_POLL_ALLOW_NETS, Settings
from statusd.sweeper.url_policy import check_status_url
from tests.conftest import TEST_API_TOKEN
from tests.support.api_client import in_process_app
from tests.support.processes import free_port

DEFAULT = [ipaddress.ip_network(n) for n in DEFAULT_POLL_ALLOW_NETS]
REFUSED = [
    "file:///etc/passwd",
    "ftp://127.0.0.1/status",
    "gopher://127.0.0.1:70/",
    "http://8.8.8.8/status",  # a public address, not in the allow-list
    "http://[2001:4860:4860::8888]/status",
    "http://user:pw@127.0.0.1/status",
    "http:///status",
    "http://127.0.0.1:99999/status",
    "http://does-not-resolve.invalid/status",
    "http://127.0.0.1/" + "x" * 3000,
]


@pytest.mark.parametrize("url", REFUSED)
async def test_check_status_url_refuses(url: str) -> None:
    with pytest.raises(UnsafeStatusURL):
        await check_status_url(url, DEFAULT)


async def test_a_name_resolving_outside_the_allow_list_is_refused_whatever_it_looks_like() -> None:
    only_10 = [ipaddress.ip_network("10.0.0.0/8")]
    with pytest.raises(UnsafeStatusURL, match="resolves to 127.0.0.1"):
        await check_status_url("http://localhost:8000/status", only_10)
    assert "127.0.0.1" in await check_status_url("http://localhost:8000/status", DEFAULT)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[str]:
    runner = web.AppRunner(in_process_app(settings))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_registration_refuses_disallowed_status_urls_with_422(api: str) -> None:
    headers = {"Authorization": f"Bearer {TEST_API_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for n, url in enumerate([*REFUSED[:5], "http://example-of.invalid/status"]):
            body = {"id": f"ssrf-{n}", "kind": "training", "status_url": url}
            async with http.post(f"{api}/v1/workloads", json=body) as resp:
                doc = await resp.json()
                assert resp.status == 422, (url, doc)
                assert "status_url" in str(doc), doc
            async with http.get(f"{api}/v1/workloads/ssrf-{n}") as resp:
                assert resp.status == 404  # nothing written
        ok = {"id": "fine", "kind": "training", "status_url": "http://127.0.0.1:8000/status"}
        async with http.post(f"{api}/v1/workloads", json=ok) as resp:
            assert resp.status == 201
