"""Flap damping and silences, with a real `statusd worker` (sync queue) and beat delivering to a
real webhook receiver on loopback, on both databases:
- a workload that keeps going UNREACHABLE and recovering raises ONE `flapping` alert instead of
  one per flap, shows `"flapping": true` (API and stale report), and after a quiet window is
  alerted normally again;
- a silenced workload raises no alert while still shown (`"silenced": true`), and alerts again
  once its silence is deleted or has expired.
Transitions go through the one lifecycle path (apply_observation), as the sweeper and consumers
make them."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from statusd.lifecycle import Source, State
from statusd.models import OutboxTarget
from statusd.runtime import Runtime
from statusd.settings import Settings
from statusd.transitions import Observation, Outcome, apply_observation
from tests.support.api_client import api_client
from tests.support.fleet_wait import wait_until
from tests.support.sync_worker import Workers, outbox_rows, register_fleet, wait_outbox
from tests.support.webhook_receiver import WebhookReceiver

pytest_plugins = ("tests.support.sync_fixtures",)
pytestmark = pytest.mark.slow  # real worker + beat, and a quiet flap window to wait out

FLAP_WINDOW = 8.0  # seconds: six quick flaps fit in it, and the quiet window passes in the test
SETTLE = 60.0  # bound on alert delivery by the worker on a busy machine
_seq = itertools.count(100)


@pytest.fixture
async def hook() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def stack(
    hook: WebhookReceiver,
    e2e_settings: Callable[..., Settings],
    runtime_for: Callable[..., Any],
    workers: Workers,
) -> AsyncIterator[tuple[Runtime, TestClient[Any, Any]]]:
    settings = e2e_settings(
        main_api_url=None, alert_webhooks=[hook.url], flap_max=3, flap_window=FLAP_WINDOW
    )
    rt = await runtime_for(settings)
    workers.worker(settings)
    workers.beat(settings)
    async with api_client(settings) as client:
        yield rt, client


async def lose(rt: Runtime, wid: str) -> Outcome:
    result = await apply_observation(
        rt.ledger, Observation(wid, State.UNREACHABLE, Source.SWEEPER, reason="2 polls failed")
    )
    return result.outcome


async def hear(rt: Runtime, wid: str) -> Outcome:
    result = await apply_observation(
        rt.ledger, Observation(wid, State.READY, Source.PUSH, seq=next(_seq))
    )
    return result.outcome


async def workload(client: TestClient[Any, Any], wid: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/workloads/{wid}")
    assert resp.status == 200
    return dict(await resp.json())


async def stale_item(client: TestClient[Any, Any], wid: str) -> dict[str, Any]:
    report = await (await client.get("/v1/reports/stale")).json()
    return next(i for i in report["items"] if i["id"] == wid)


async def settled(rt: Runtime, workers: Workers) -> None:
    await wait_outbox(
        rt.ledger, SETTLE, target=OutboxTarget.ALERT, procs=workers.procs, what="alerts delivered"
    )


async def test_a_flapping_workload_raises_one_flapping_alert(
    stack: tuple[Runtime, TestClient[Any, Any]], hook: WebhookReceiver, workers: Workers
) -> None:
    rt, client = stack
    await register_fleet(rt.ledger, ["dep-flap"])
    assert await hear(rt, "dep-flap") is Outcome.APPLIED
    for _ in range(6):  # six round trips, well within one flap window
        assert await lose(rt, "dep-flap") is Outcome.APPLIED
        assert await hear(rt, "dep-flap") is Outcome.APPLIED
    assert await lose(rt, "dep-flap") is Outcome.APPLIED  # still flapping: no alert
    await settled(rt, workers)
    # Three ordinary incidents, then the fourth recovery within the window says "flapping" once.
    assert hook.events("dep-flap") == ["unreachable", "recovered"] * 3 + [
        "unreachable",
        "flapping",
    ]
    flap = hook.alerts[-1]
    assert flap["state"] == "READY" and "flapping" in flap["text"]
    assert (await workload(client, "dep-flap"))["flapping"] is True
    assert (await stale_item(client, "dep-flap"))["flapping"] is True

    # Quiet for a window: the flag clears by itself and the next recovery is alerted again.
    await wait_until(
        lambda: workload(client, "dep-flap"),
        lambda w: w["flapping"] is False,
        within=FLAP_WINDOW + SETTLE,
        what="flapping flag cleared after a quiet window",
    )
    assert await hear(rt, "dep-flap") is Outcome.APPLIED
    await hook.wait_for(9, SETTLE)
    assert hook.events("dep-flap")[-1] == "recovered"
    await settled(rt, workers)
    assert len(hook.alerts) == 9


async def test_a_silenced_workload_raises_nothing_while_shown(
    stack: tuple[Runtime, TestClient[Any, Any]], hook: WebhookReceiver, workers: Workers
) -> None:
    rt, client = stack
    await register_fleet(rt.ledger, ["dep-quiet", "dep-loud", "dep-brief"])
    for wid in ("dep-quiet", "dep-loud", "dep-brief"):
        await hear(rt, wid)
    soon = datetime.now(UTC) + timedelta(seconds=3)
    created = {}
    for name, match, until in (
        ("quiet", {"id": "dep-quiet"}, datetime.now(UTC) + timedelta(hours=1)),
        ("brief", {"id": "dep-brief", "kind": "deployment"}, soon),
    ):
        resp = await client.post(
            "/v1/silences",
            json={"match": match, "until": until.isoformat(), "reason": "maintenance"},
        )
        assert resp.status == 201, await resp.text()
        created[name] = (await resp.json())["id"]

    for wid in ("dep-quiet", "dep-brief", "dep-loud"):
        assert await lose(rt, wid) is Outcome.APPLIED
    await hook.wait_for(1, SETTLE)  # dep-loud's, written after the silenced ones'
    await settled(rt, workers)
    assert hook.events() == ["unreachable"] and hook.alerts[0]["workload_id"] == "dep-loud"
    quiet = await workload(client, "dep-quiet")
    assert quiet["state"] == "UNREACHABLE" and quiet["silenced"] is True
    assert (await stale_item(client, "dep-quiet"))["silenced"] is True
    assert (await stale_item(client, "dep-loud"))["silenced"] is False
    alert_rows = await outbox_rows(rt.ledger, target=OutboxTarget.ALERT)
    assert {r["workload_id"] for r in alert_rows} == {"dep-loud"}

    # The silence is deleted: the next incident of dep-quiet is alerted.
    assert (await client.delete(f"/v1/silences/{created['quiet']}")).status == 200
    assert (await workload(client, "dep-quiet"))["silenced"] is False
    assert await hear(rt, "dep-quiet") is Outcome.APPLIED
    # The brief silence expires by itself.
    await wait_until(
        lambda: workload(client, "dep-brief"),
        lambda w: w["silenced"] is False,
        within=SETTLE,
        what="brief silence expired",
    )
    assert await hear(rt, "dep-brief") is Outcome.APPLIED
    await hook.wait_for(3, SETTLE)
    await settled(rt, workers)
    await asyncio.sleep(1.5)  # more beat drains: nothing more arrives
    assert sorted((a["workload_id"], a["event"]) for a in hook.alerts) == [
        ("dep-brief", "recovered"),
        ("dep-loud", "unreachable"),
        ("dep-quiet", "recovered"),
    ]
