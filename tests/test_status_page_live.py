"""The status page: token login, and what a person sees in a real headless Chromium.

A workload going UNREACHABLE appears in the stale table and the transition list WITHOUT a
reload (the page follows /v1/events). A screenshot is saved to artifacts/status-page.png.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from statusd.api.auth import COOKIE_NAME
from statusd.app_keys import RUNTIME
from statusd.lifecycle import Kind, Source, State
from statusd.liveness import mark_seen, on_registered
from statusd.registry import register
from statusd.settings import Settings
from statusd.transitions import Observation, apply_observation
from tests.conftest import TEST_API_TOKEN
from tests.support.api_client import api_client
from tests.support.browser import chromium

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        yield c


async def test_login_sets_an_httponly_strict_cookie_that_the_json_endpoints_accept(
    client: TestClient[Any, Any],
) -> None:
    anonymous = {"Authorization": ""}
    page = await client.get("/", headers=anonymous)
    assert page.status == 200 and 'name="token"' in await page.text()

    wrong = await client.post(
        "/login", data={"token": "not-the-token"}, headers=anonymous, allow_redirects=False
    )
    assert wrong.status == 401 and "not valid" in await wrong.text()
    assert COOKIE_NAME not in wrong.cookies

    right = await client.post(
        "/login", data={"token": TEST_API_TOKEN}, headers=anonymous, allow_redirects=False
    )
    assert right.status == 303 and right.headers["Location"] == "/"
    set_cookie = right.headers["Set-Cookie"]
    assert (
        f"{COOKIE_NAME}=" in set_cookie
        and "HttpOnly" in set_cookie
        and "SameSite=Strict" in set_cookie
    )

    session = right.cookies[COOKIE_NAME].value
    assert TEST_API_TOKEN not in set_cookie  # the cookie is a signed session id, not the token

    client.session.cookie_jar.clear()  # from here on, only the cookie we send by hand
    cookie = {"Cookie": f"{COOKIE_NAME}={session}", "Authorization": ""}
    assert 'id="stale-table"' in await (await client.get("/", headers=cookie)).text()
    for path in ("/v1/reports/stale", "/v1/reports/summary", "/v1/reports/transitions"):
        assert (await client.get(path, headers=cookie)).status == 200, path
        assert (await client.get(path, headers=anonymous)).status == 401, path
    assert (await client.get("/static/app.js", headers=anonymous)).status == 200
    assert (await client.get("/static/nope.js", headers=anonymous)).status == 404


async def test_a_workload_going_unreachable_appears_without_reload(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    rt = client.server.app[RUNTIME]
    now = time.time()
    for wid, kind, state in (
        ("steady-train", Kind.TRAINING, State.RUNNING),
        ("victim-deploy", Kind.DEPLOYMENT, State.READY),
    ):
        await register(rt.engine, wid, kind, labels={"owner": "alice"})
        await on_registered(rt.redis, rt.keys, wid, now)
        await apply_observation(rt.ledger, Observation(wid, state, Source.PUSH, seq=1))
        await mark_seen(rt.redis, rt.keys, {wid: (now, None)})
    base = str(client.make_url("/"))

    async with chromium(tmp_path) as browser:
        await browser.navigate(base)
        await browser.wait_for("document.getElementById('login-form') !== null")
        await browser.evaluate(
            f"document.getElementById('token').value = {json.dumps(TEST_API_TOKEN)};"
            "document.getElementById('login-form').submit(); true"
        )
        await browser.wait_for("document.getElementById('stale-table') !== null")
        await browser.wait_for("document.getElementById('live').dataset.state === 'open'")
        await browser.wait_for("document.querySelectorAll('#transitions li').length === 2")
        assert await browser.evaluate("document.getElementById('stale-count').textContent") == "0"
        assert (
            await browser.evaluate(
                "document.querySelector('#counts tr[data-kind=deployment] td[data-state=READY]').textContent"
            )
            == "1"
        )
        # Anything a reload would wipe: if it survives, the page updated itself.
        await browser.evaluate("window.__noReload = 'still here'; true")

        await apply_observation(
            rt.ledger,
            Observation(
                "victim-deploy", State.UNREACHABLE, Source.SWEEPER, reason="2 polls failed"
            ),
        )

        row = await browser.wait_for(
            "(() => { const r = document.querySelector('#stale-table tr[data-id=\"victim-deploy\"]');"
            " return r && r.dataset.state; })()"
        )
        assert row == "UNREACHABLE"
        # What a person reads in that row (not just attributes): id, state, why, owner.
        cells = await browser.evaluate(
            "[...document.querySelectorAll('#stale-table tr[data-id=\"victim-deploy\"] td')].map(td => td.textContent)"
        )
        assert cells[:4] == ["victim-deploy", "deployment", "UNREACHABLE", "unreachable"]
        assert cells[-1] == "owner=alice"
        assert await browser.wait_for(
            'document.querySelector(\'#transitions li[data-workload="victim-deploy"][data-to="UNREACHABLE"]\') !== null'
        )
        await browser.wait_for("document.getElementById('stale-count').textContent === '1'")
        assert await browser.evaluate("window.__noReload") == "still here"
        assert "2 polls failed" in await browser.evaluate(
            "document.getElementById('transitions').textContent"
        )
        shot = await browser.screenshot(ARTIFACTS / "status-page.png")
    assert shot.stat().st_size > 10_000
