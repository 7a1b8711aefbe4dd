"""The workload views as a person sees them, in a real headless Chromium: the fleet list's
filters and search, a live change without reload, a workload page whose timeline bands match the
history, the banners, the fleet picture, and the 404 page. Screenshots go to artifacts/.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import update

from statusd import selfwatch
from statusd.app_keys import RUNTIME
from statusd.db import transaction
from statusd.lifecycle import Kind, Source, State
from statusd.liveness import mark_seen, on_registered
from statusd.models import WorkloadRow
from statusd.registry import register
from statusd.settings import Settings
from statusd.transitions import Observation, Outcome, apply_observation
from tests.conftest import TEST_API_TOKEN
from tests.support.api_client import api_client
from tests.support.browser import Browser, chromium
from tests.support.history import record_story, state_at

_W = WorkloadRow.__table__  # type: ignore[attr-defined]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

# id, kind, states walked through, labels, seconds since the last heartbeat
FLEET: list[tuple[str, Kind, list[State], dict[str, str], float]] = [
    ("train-bert", Kind.TRAINING, [State.STARTING, State.RUNNING], {"team": "nlp"}, 0),
    ("train-resnet", Kind.TRAINING, [State.RUNNING], {"team": "vision"}, 3600),  # stale
    ("train-gpt", Kind.TRAINING, [State.RUNNING, State.SUCCEEDED], {"team": "nlp"}, 0),
    ("dep-api", Kind.DEPLOYMENT, [State.DEPLOYING, State.READY], {"team": "web"}, 0),
    ("dep-search", Kind.DEPLOYMENT, [State.READY], {"team": "nlp"}, 0),
    ("nb-alice", Kind.NOTEBOOK, [State.STARTING, State.READY], {"team": "vision"}, 0),
]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        rt = c.server.app[RUNTIME]
        now = time.time()
        for wid, kind, states, labels, silent_s in FLEET:
            await register(rt.engine, wid, kind, labels=labels)
            await on_registered(rt.redis, rt.keys, wid, now)
            for seq, state in enumerate(states, 1):
                obs = Observation(wid, state, Source.PUSH, seq=seq)
                assert (await apply_observation(rt.ledger, obs)).outcome is Outcome.APPLIED
            await mark_seen(rt.redis, rt.keys, {wid: (now - silent_s, None)})
            async with transaction(rt.engine) as conn:  # the row's copy too: newest one wins
                await conn.execute(
                    update(_W)
                    .where(_W.c.id == wid)
                    .values(last_seen_at=datetime.fromtimestamp(now - silent_s, UTC))
                )
        yield c


async def sign_in(browser: Browser, base: str) -> None:
    await browser.navigate(base)
    await browser.wait_for("document.getElementById('login-form') !== null")
    await browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(TEST_API_TOKEN)};"
        "document.getElementById('login-form').submit(); true"
    )
    await browser.wait_for("document.getElementById('stale-table') !== null")


ROW_IDS = "[...document.querySelectorAll('#fleet-table tbody tr')].map(r => r.dataset.id).join(',')"


async def rows_become(browser: Browser, ids: list[str]) -> None:
    wanted = ",".join(ids)
    await browser.wait_for(f"{ROW_IDS} === {json.dumps(wanted)}")


async def choose(browser: Browser, select_id: str, value: str) -> None:
    await browser.evaluate(
        f"(() => {{ const s = document.getElementById({json.dumps(select_id)});"
        f" s.value = {json.dumps(value)};"
        " s.dispatchEvent(new Event('change', { bubbles: true })); return true; })()"
    )


async def type_into(browser: Browser, input_id: str, value: str, event: str) -> None:
    await browser.evaluate(
        f"(() => {{ const i = document.getElementById({json.dumps(input_id)});"
        f" i.value = {json.dumps(value)};"
        f" i.dispatchEvent(new Event({json.dumps(event)}, {{ bubbles: true }})); return true; }})()"
    )


async def test_fleet_list_filters_search_and_live_rows(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    rt = client.server.app[RUNTIME]
    base = str(client.make_url("/"))
    everyone = sorted(w[0] for w in FLEET)
    async with chromium(tmp_path) as browser:
        await sign_in(browser, base)
        await browser.navigate(base + "workloads")
        await rows_become(browser, everyone)
        # Every row links to its workload's page, and shows what a person needs.
        assert (
            await browser.evaluate(
                "document.querySelector('#fleet-table tr[data-id=\"train-resnet\"] a').getAttribute('href')"
            )
            == "/workloads/train-resnet"
        )
        cells = await browser.evaluate(
            "[...document.querySelectorAll('#fleet-table tr[data-id=\"train-resnet\"] td')]"
            ".map(td => td.textContent)"
        )
        assert cells[:5] == ["train-resnet", "training", "RUNNING", "stale", "team=vision"]

        await browser.wait_for("document.querySelectorAll('#f-kind option').length === 4")
        # `flapping` and `silenced` marks render when the workload JSON carries them (absent: off).
        assert (
            await browser.evaluate(
                "statusd.marks({stale: false, flapping: true, silenced: true})"
                ".map(n => n.dataset.mark).join()"
            )
            == "flapping,silenced"
        )
        assert (
            await browser.evaluate("statusd.marks({stale: true}).map(n => n.dataset.mark).join()")
            == "stale"
        )
        await choose(browser, "f-kind", "deployment")
        await rows_become(browser, ["dep-api", "dep-search"])
        await choose(browser, "f-kind", "")
        await type_into(browser, "f-label", "team:vision", "change")
        await browser.evaluate("document.getElementById('filters').requestSubmit(); true")
        await rows_become(browser, ["nb-alice", "train-resnet"])
        await choose(browser, "f-state", "READY")
        await rows_become(browser, ["nb-alice"])
        await choose(browser, "f-state", "")
        await choose(browser, "f-stale", "true")
        await rows_become(browser, ["train-resnet"])
        # The filters are in the address bar: the view can be shared as a link.
        assert await browser.evaluate("window.location.search") == (
            "?stale=true&label=team%3Avision"
        )
        await browser.evaluate("document.getElementById('f-clear').click(); true")
        await rows_become(browser, everyone)
        await type_into(browser, "f-search", "train-", "input")
        await rows_become(browser, ["train-bert", "train-gpt", "train-resnet"])
        # A filter the API cannot understand is shown, not swallowed.
        await type_into(browser, "f-label", "no-colon", "change")
        await browser.evaluate("document.getElementById('filters').requestSubmit(); true")
        error = await browser.wait_for(
            "!document.getElementById('fleet-error').hidden"
            " && document.getElementById('fleet-error').textContent"
        )
        assert "label" in error
        await type_into(browser, "f-label", "", "change")
        await browser.evaluate("document.getElementById('filters').requestSubmit(); true")
        await rows_become(browser, ["train-bert", "train-gpt", "train-resnet"])

        # Live: the sweeper's verdict shows on the row without a reload.
        await browser.wait_for("document.getElementById('live').dataset.state === 'open'")
        await browser.evaluate("window.__noReload = 'still here'; true")
        verdict = Observation("train-bert", State.UNREACHABLE, Source.SWEEPER, reason="no beats")
        assert (await apply_observation(rt.ledger, verdict)).outcome is Outcome.APPLIED
        await browser.wait_for(
            "document.querySelector('#fleet-table tr[data-id=\"train-bert\"]').dataset.state"
            " === 'UNREACHABLE'"
        )
        assert await browser.evaluate("window.__noReload") == "still here"
        await browser.evaluate("document.getElementById('f-clear').click(); true")
        await rows_become(browser, everyone)
        assert browser.console == []  # no script logged a failure (fetch, render, stream)
        shot = await browser.screenshot(ARTIFACTS / "status-page-fleet.png")

        # Pages: keyset cursors forward, a stack of them back.
        await browser.navigate(base + "workloads?limit=4")
        await rows_become(browser, everyone[:4])
        await browser.evaluate("document.getElementById('next').click(); true")
        await rows_become(browser, everyone[4:])
        assert await browser.evaluate("document.getElementById('next').disabled") is True
        await browser.evaluate("document.getElementById('prev').click(); true")
        await rows_become(browser, everyone[:4])
    assert shot.stat().st_size > 10_000


BANDS = "[...document.querySelectorAll('#timeline-svg g.band')]"


async def test_workload_page_timeline_matches_the_history_and_follows_it(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    rt = client.server.app[RUNTIME]
    refused = Observation("dep-api", State.DEPLOYING, Source.PUSH, seq=9, reason="rollout again")
    assert (await apply_observation(rt.ledger, refused)).outcome is Outcome.REFUSED
    now = time.time()
    await selfwatch.write_disruption(
        rt.redis,
        rt.keys,
        selfwatch.DisruptionMode(active=True, since=now - 120, stale=5, tracked=6),
    )
    # The sweeper last finished long ago: the stalled banner too.
    await selfwatch.record_sweep_success(rt.redis, rt.keys, now - 3600)
    history = await (await client.get("/v1/workloads/dep-api/transitions")).json()
    expected = ["PENDING", *[t["to"] for t in history["items"]]]
    assert expected == ["PENDING", "DEPLOYING", "READY"]

    base = str(client.make_url("/"))
    async with chromium(tmp_path) as browser:
        await sign_in(browser, base)
        # From the needs-attention list on the overview, a click opens the workload's page.
        await browser.wait_for(
            "document.querySelector('#stale-table tr[data-id=\"train-resnet\"] a') !== null"
        )
        await browser.evaluate(
            "document.querySelector('#stale-table tr[data-id=\"train-resnet\"] a').click(); true"
        )
        await browser.wait_for("window.location.pathname === '/workloads/train-resnet'")
        await browser.wait_for("document.getElementById('w-id').textContent === 'train-resnet'")
        # ...and so does a row of the recent transitions.
        await browser.navigate(base)
        await browser.wait_for(
            "document.querySelector('#transitions li[data-workload=\"dep-api\"] a') !== null"
        )
        await browser.evaluate(
            "document.querySelector('#transitions li[data-workload=\"dep-api\"] a').click(); true"
        )
        await browser.wait_for("window.location.pathname === '/workloads/dep-api'")
        await browser.wait_for("document.getElementById('w-id').textContent === 'dep-api'")

        await browser.navigate(base + "workloads/dep-api")
        await browser.wait_for(f"{BANDS}.length === {len(expected)}")
        states = await browser.evaluate(f"{BANDS}.map(g => g.dataset.state)")
        assert states == expected
        # Each band names its state for screen readers and in its tooltip, and is coloured by it.
        titles = await browser.evaluate(f"{BANDS}.map(g => g.querySelector('title').textContent)")
        labels = await browser.evaluate(f"{BANDS}.map(g => g.getAttribute('aria-label'))")
        colours = await browser.evaluate(
            f"{BANDS}.map(g => getComputedStyle(g.querySelector('rect')).fill)"
        )
        for state, title, label in zip(expected, titles, labels, strict=True):
            assert title.startswith(f"{state} from ") and label == title
        assert colours[0] != colours[1] != colours[2]
        assert titles[-1].endswith(")") and " to now " in titles[-1]
        # Bands run left to right in time, without overlap.
        xs = await browser.evaluate(
            f"{BANDS}.map(g => Number(g.querySelector('rect').getAttribute('x')))"
        )
        assert xs == sorted(xs)
        table = await browser.evaluate(
            "[...document.querySelectorAll('#transitions-table tbody tr')].map(r => r.dataset.to)"
        )
        assert table == ["READY", "DEPLOYING"]  # newest first
        assert await browser.evaluate(
            "document.querySelector('#refused-table tbody tr td:nth-child(5)').textContent"
        )
        # No main API configured here: nothing to be in sync with, and the page says so.
        assert await browser.evaluate("document.getElementById('sync').dataset.synced") == "null"
        assert "no main API configured" in await browser.evaluate(
            "document.getElementById('sync').textContent"
        )
        banners = await browser.wait_for(
            "[...document.querySelectorAll('#banners [data-banner]')].map(b => b.dataset.banner).join(',')"
            " || null"
        )
        assert banners == "disruption,sweeper"
        assert "5 of 6" in await browser.evaluate("document.getElementById('banners').textContent")

        # A live change appears as a new band and a new row, without a reload.
        await browser.wait_for("document.getElementById('live').dataset.state === 'open'")
        await browser.evaluate("window.__noReload = 'still here'; true")
        assert (
            await apply_observation(
                rt.ledger, Observation("dep-api", State.DEGRADED, Source.PUSH, seq=10)
            )
        ).outcome is Outcome.APPLIED
        await browser.wait_for(f"{BANDS}.length === {len(expected) + 1}")
        assert await browser.evaluate(f"{BANDS}.map(g => g.dataset.state)") == [
            *expected,
            "DEGRADED",
        ]
        # The header follows within a refresh: the page's story is read as the workload row and
        # its transitions, two statements, so one refresh may draw the new band beside the old
        # state when the change commits between them.
        await browser.wait_for("document.getElementById('w-state').textContent === 'DEGRADED'")
        assert await browser.evaluate("window.__noReload") == "still here"
        assert browser.console == []  # no script logged a failure (fetch, render, stream)
        shot = await browser.screenshot(ARTIFACTS / "status-page-workload.png")
        assert shot.stat().st_size > 10_000

        await browser.navigate(base + "workloads/no-such-workload")
        await browser.wait_for("document.getElementById('not-found') !== null")
        assert "No workload no-such-workload" in await browser.evaluate("document.body.textContent")

        # Deregistered: the page stays, says so, and the last band ends at the deregistration.
        assert (await client.delete("/v1/workloads/dep-search")).status == 200
        await browser.navigate(base + "workloads/dep-search")
        notice = await browser.wait_for(
            "!document.getElementById('w-deregistered').hidden"
            " && document.getElementById('w-deregistered').textContent"
        )
        assert notice.startswith("Deregistered at ")
        assert await browser.evaluate(f"{BANDS}.map(g => g.dataset.state)") == ["PENDING", "READY"]
        assert " to now " not in await browser.evaluate(
            f"{BANDS}[1].querySelector('title').textContent"
        )


def batch_stories(now: datetime) -> dict[str, tuple[Kind, datetime, list[tuple[datetime, State]]]]:
    """A lively last hour: trainings that finish or go silent, services that wobble."""
    m = lambda minutes: timedelta(minutes=minutes, seconds=30)  # noqa: E731
    stories: dict[str, tuple[Kind, datetime, list[tuple[datetime, State]]]] = {}
    for i in range(10):
        created = now - timedelta(minutes=56) + m(2 * i)
        if i % 2 == 0:
            path = [(created + m(3), State.RUNNING), (created + m(20 + i), State.SUCCEEDED)]
        else:
            path = [
                (created + m(3), State.RUNNING),
                (created + m(25), State.UNREACHABLE),
                (created + m(33), State.LOST),
            ]
        stories[f"batch-{i:02d}"] = (Kind.TRAINING, created, [p for p in path if p[0] < now])
    for i in range(4):
        created = now - timedelta(minutes=50)
        path = [(created + m(2), State.DEPLOYING), (created + m(6), State.READY)]
        if i == 1:
            path += [(created + m(30), State.DEGRADED), (created + m(40), State.READY)]
        stories[f"svc-{i}"] = (Kind.DEPLOYMENT, created, path)
    return stories


async def test_overview_draws_the_fleet_picture_from_the_history(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    rt = client.server.app[RUNTIME]
    stories = batch_stories(datetime.now(UTC))
    for wid, (kind, created, moves) in stories.items():
        await record_story(rt.engine, wid, kind, created, moves, labels={"team": "batch"})
    base = str(client.make_url("/"))
    async with chromium(tmp_path) as browser:
        await sign_in(browser, base)
        await browser.wait_for("document.getElementById('fleet-picture-svg') !== null")
        bars = await browser.evaluate(
            "[...document.querySelectorAll('#fleet-picture-svg g.bar')].map(g => ({at: g.dataset.at,"
            " title: g.querySelector('title').textContent, counts: Object.fromEntries("
            "[...g.querySelectorAll('rect')].map(r => [r.dataset.state, Number(r.dataset.count)]))}))"
        )
        assert len(bars) == 61  # one per minute of the last hour, and now
        # Each bar stacks what the stories say the fleet was at that minute (the FLEET fixture's
        # workloads were registered seconds ago: in the newest bar only).
        for bar in bars[:-1]:
            at = datetime.fromisoformat(bar["at"])
            expected: dict[str, int] = {}
            for _, created, moves in stories.values():
                state = state_at(created, moves, at)
                if state is not None:
                    expected[state.value] = expected.get(state.value, 0) + 1
            assert bar["counts"] == expected, bar
        assert any("LOST" in bar["counts"] for bar in bars)
        assert bars[-1]["counts"]["RUNNING"] == 2 + sum(
            1 for _, _, moves in stories.values() if moves and moves[-1][1] is State.RUNNING
        )
        # Each bar names its minute and counts for screen readers and tooltips.
        assert bars[30]["title"].endswith(
            ", ".join(f"{s} {n}" for s, n in bars[30]["counts"].items())
        )
        legend = await browser.evaluate("document.getElementById('fleet-legend').textContent")
        assert "LOST 5" in legend
        await browser.wait_for("document.getElementById('live').dataset.state === 'open'")
        await browser.wait_for("document.querySelectorAll('#counts tbody tr').length === 3")
        assert browser.console == []  # no script logged a failure (fetch, render, stream)
        shot = await browser.screenshot(ARTIFACTS / "status-page-overview.png")
        assert shot.stat().st_size > 10_000

        # A workload with an hour of history: the page the README shows.
        await browser.navigate(base + "workloads/batch-03")
        await browser.wait_for(f"{BANDS}.length === 4")
        assert await browser.evaluate(f"{BANDS}.map(g => g.dataset.state)") == [
            "PENDING",
            "RUNNING",
            "UNREACHABLE",
            "LOST",
        ]
        assert browser.console == []  # no script logged a failure (fetch, render, stream)
        shot = await browser.screenshot(ARTIFACTS / "status-page-workload-history.png")
    assert shot.stat().st_size > 10_000
