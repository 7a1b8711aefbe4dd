"""The status page shows a child whose parent is down as "suppressed by <parent>", linking to the
parent's page, in the fleet list and on the child's own page (real headless Chromium, real app
on loopback, both databases)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from statusd.app_keys import RUNTIME
from statusd.lifecycle import Kind, Source, State
from statusd.registry import register
from statusd.settings import Settings
from statusd.transitions import Observation, apply_observation
from tests.support.api_client import api_client
from tests.support.browser import chromium
from tests.test_status_page_workloads_browser import sign_in

MARK = "document.querySelector('[data-mark=\"suppressed\"]')"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        rt = c.server.app[RUNTIME]
        await register(rt.engine, "node-3", Kind.DEPLOYMENT)
        await register(rt.engine, "node-3.web", Kind.DEPLOYMENT, parent="node-3")
        for wid in ("node-3", "node-3.web"):
            await apply_observation(rt.ledger, Observation(wid, State.READY, Source.PUSH, seq=1))
        await apply_observation(rt.ledger, Observation("node-3", State.UNREACHABLE, Source.SWEEPER))
        yield c


async def test_suppressed_by_links_to_the_parent(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    base = str(client.make_url("/"))
    async with chromium(tmp_path) as browser:
        await sign_in(browser, base)
        await browser.navigate(base + "workloads/node-3.web")
        await browser.wait_for(f"{MARK} !== null")
        assert await browser.evaluate(f"{MARK}.textContent") == "suppressed by node-3"
        assert await browser.evaluate(f"{MARK}.getAttribute('href')") == "/workloads/node-3"
        parent = "document.querySelector('[data-fact=\"parent\"]').textContent"
        assert await browser.evaluate(parent) == "node-3"

        await browser.navigate(base + "workloads")
        row = '#fleet-table tr[data-id="node-3.web"] [data-mark="suppressed"]'
        await browser.wait_for(f"document.querySelector({json.dumps(row)}) !== null")
        # The parent itself carries no such mark.
        other = '#fleet-table tr[data-id="node-3"] [data-mark="suppressed"]'
        assert await browser.evaluate(f"document.querySelector({json.dumps(other)})") is None
