"""Dependencies end to end: the API (with consumers), a real `statusd worker --beat` (sweep,
poll, sync), a real webhook receiver on loopback; SQLite and PostgreSQL.

A node agent (the parent) and 50 containers on its node (its children) heartbeat; the node dies:
all 51 go silent at the same moment, and the sweeper convicts them in whatever order it finds
them. Exactly one alert reaches the receiver (the parent's); the 50 children are UNREACHABLE
with `suppressed_by` in the API and the stale report. 47 containers come back (nothing is
sent: their outage was never announced), then the agent: exactly 3 child alerts, for the 3
still dead, and the parent's recovery.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from statusd.lifecycle import State
from statusd.settings import Settings
from statusd.simulate.control import Beat, StatusdAPI
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.celery_procs import broker, running_worker
from tests.support.fleet_api import running_api
from tests.support.fleet_wait import wait_until
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.slow

PARENT = "node-7"
CHILDREN = [f"node-7.c{n:02d}" for n in range(50)]
DEAD = CHILDREN[:3]  # stay dead after the node is back
TTL, INTERVAL, BEAT_EVERY = 1.5, 0.25, 0.25
SLACK = 45.0  # bound on every wait: processes on a busy 2-core box
QUIET = 6 * INTERVAL  # more sweeps and drains: nothing else arrives
LABEL = "suite:deps"


@pytest.fixture
def broker_url(tmp_path: Path) -> Iterator[str]:
    with broker("redis", tmp_path) as url:
        yield url


@pytest.fixture
async def hook() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def stack(
    make_settings: Callable[..., Settings], broker_url: str, hook: WebhookReceiver, tmp_path: Path
) -> Iterator[str]:
    settings = make_settings(
        broker_url=broker_url,
        heartbeat_ttl=TTL,
        sweep_interval=INTERVAL,
        unreachable_after=1,
        lost_after=600,
        start_timeout=60,
        consumers=1,
        consumer_block_ms=100,
        alert_webhooks=[hook.url],
        sync_interval=0.5,
        sync_timeout=2.0,
        sync_budget=4.0,
        # The whole fleet here is one node: keep disruption mode (statusd suspecting itself when
        # most of the fleet falls silent at once) out of this test.
        disruption_min=10_000,
    )
    env = settings_env(settings)
    with (
        running_api(env, tmp_path) as url,
        running_worker(env, tmp_path, queues="sweep,poll,sync", concurrency=2, beat=True),
    ):
        yield url


class Heartbeats:
    """The node's containers and agent: every BEAT_EVERY seconds, one batch for those `alive`."""

    def __init__(self, api: StatusdAPI, tokens: dict[str, str]) -> None:
        self.api, self.tokens = api, tokens
        self.alive: set[str] = set(tokens)
        self._seq = itertools.count(1)

    async def run(self) -> None:
        while True:
            seq = next(self._seq)
            beats = [Beat(w, self.tokens[w], State.READY, seq) for w in sorted(self.alive)]
            await self.api.heartbeat(beats)
            await asyncio.sleep(BEAT_EVERY)


async def register(api: StatusdAPI, items: list[dict[str, Any]]) -> dict[str, str]:
    status, body = await api._json("POST", "/v1/workloads:batch", {"items": items})
    assert status == 200 and body["refused"] == 0, body
    return {r["workload"]["id"]: r["workload"]["heartbeat_token"] for r in body["results"]}


async def workloads(api: StatusdAPI) -> dict[str, dict[str, Any]]:
    status, body = await api._json("GET", "/v1/workloads", params={"label": LABEL, "limit": "100"})
    assert status == 200 and body["next_cursor"] is None, body
    return {w["id"]: w for w in body["items"]}


def in_state(ws: dict[str, dict[str, Any]], ids: list[str], state: str) -> bool:
    return all(ws[w]["state"] == state for w in ids)


def alerts(hook: WebhookReceiver) -> list[tuple[str, str]]:
    return sorted((a["workload_id"], a["event"]) for a in hook.alerts)


async def test_a_dead_node_pages_once_and_its_dead_containers_after_it_is_back(
    stack: str, hook: WebhookReceiver
) -> None:
    labels = {"suite": "deps"}
    async with StatusdAPI(stack, TEST_API_TOKEN) as api:
        tokens = await register(api, [{"id": PARENT, "kind": "deployment", "labels": labels}])
        tokens |= await register(
            api,
            [{"id": c, "kind": "deployment", "labels": labels, "parent": PARENT} for c in CHILDREN],
        )
        beats = Heartbeats(api, tokens)
        loop = asyncio.create_task(beats.run())
        try:
            await wait_until(
                lambda: workloads(api),
                lambda ws: in_state(ws, [PARENT, *CHILDREN], "READY"),
                within=SLACK,
                what="the node and its containers READY",
            )

            # -- the node dies: everyone silent at the same moment --
            beats.alive.clear()
            ws = await wait_until(
                lambda: workloads(api),
                lambda ws: in_state(ws, [PARENT, *CHILDREN], "UNREACHABLE"),
                within=TTL + SLACK,
                what="the node and its 50 containers UNREACHABLE",
            )
            await hook.wait_for(1, SLACK)
            await asyncio.sleep(QUIET)
            assert alerts(hook) == [(PARENT, "unreachable")]
            ws = await workloads(api)
            assert {ws[c]["suppressed_by"] for c in CHILDREN} == {PARENT}
            assert ws[PARENT]["suppressed_by"] is None and ws[CHILDREN[0]]["parent"] == PARENT
            status, report = await api._json("GET", "/v1/reports/stale")
            assert status == 200, report
            listed = {i["id"]: i["suppressed_by"] for i in report["items"]}
            assert listed == {PARENT: None, **dict.fromkeys(CHILDREN, PARENT)}

            # -- 47 containers come back first: their held outage is not resolved (never sent) --
            back = CHILDREN[len(DEAD) :]
            beats.alive |= set(back)
            await wait_until(
                lambda: workloads(api),
                lambda ws: in_state(ws, back, "READY"),
                within=SLACK,
                what="47 containers READY again",
            )
            # -- then the agent: the 3 containers still dead raise their alerts now --
            beats.alive.add(PARENT)
            await hook.wait_for(1 + 1 + len(DEAD), SLACK)
            await asyncio.sleep(QUIET)
            want = [(PARENT, "recovered"), (PARENT, "unreachable")]
            want += [(c, "unreachable") for c in DEAD]
            assert alerts(hook) == sorted(want)
            ws = await workloads(api)
            assert in_state(ws, DEAD, "UNREACHABLE") and in_state(ws, [PARENT], "READY")
            assert {ws[c]["suppressed_by"] for c in CHILDREN} == {None}
        finally:
            loop.cancel()
