"""Disruption mode end to end: the API (with consumers), a real `statusd worker` (sweep, poll,
sync) and two beats, 200 heartbeating workloads with status endpoints on loopback, a real webhook
receiver; on PostgreSQL, as the compose layout runs it.

- 60% of the fleet falls silent at once (heartbeats stop, endpoints answer 503): disruption mode,
  ONE `disruption` alert, at most a handful of UNREACHABLE; a good poll answer is still applied;
  `GET /v1/reports/stale` and `statusd report stale` carry it.
- Some of the silent ones are deregistered (they stop counting), the rest are heard again: the
  mode ends by itself, ONE `disruption_over` alert.
- Then 5% of the fleet dies outside a disruption: UNREACHABLE, alerted, as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from statusd.lifecycle import Kind, State
from statusd.settings import Settings
from statusd.simulate.control import Beat, NewWorkload, StatusdAPI
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.celery_procs import broker, running_beat, running_worker
from tests.support.fleet_api import running_api
from tests.support.fleet_peer import StatusPeer
from tests.support.fleet_wait import wait_until
from tests.support.processes import all_running, run_statusd_async
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.slow

FLEET, CUT, GONE, DYING = 200, 120, 21, 10
TTL, INTERVAL, BEAT_EVERY = 3.0, 0.5, 0.5
SLACK = 45.0  # bound on every wait: processes on a busy 2-core box
HANDFUL = 5
LABEL = {"suite": "disruption"}


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
async def peer() -> AsyncIterator[StatusPeer]:
    p = StatusPeer()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def fleet_settings(
    make_settings: Callable[..., Settings], broker_url: str, hook: WebhookReceiver
) -> Settings:
    return make_settings(
        broker_url=broker_url,
        heartbeat_ttl=TTL,
        sweep_interval=INTERVAL,
        poll_timeout=0.5,
        unreachable_after=2,
        lost_after=600,
        start_timeout=60,
        consumers=1,
        consumer_block_ms=100,
        alert_webhooks=[hook.url],
        sync_interval=1.0,
        sync_timeout=2.0,
        sync_budget=4.0,
    )


@pytest.fixture
def stack(fleet_settings: Settings, tmp_path: Path) -> Iterator[str]:
    env = settings_env(fleet_settings)
    with all_running(
        running_api(env, tmp_path),
        running_worker(env, tmp_path, queues="sweep,poll,sync", concurrency=2),
        running_beat(env, tmp_path),
        running_beat(env, tmp_path),  # two beats by mistake: still one alert per flip
    ) as (url, *_):
        yield url


class Heartbeats:
    """A node agent's loop: every BEAT_EVERY seconds, one batch for the workloads in `alive`."""

    def __init__(self, api: StatusdAPI, tokens: dict[str, str]) -> None:
        self.api, self.tokens = api, tokens
        self.alive: set[str] = set(tokens)
        self.last_beat: dict[str, float] = {}
        self._seq = itertools.count(1)

    async def run(self) -> None:
        while True:
            ids = sorted(self.alive)
            seq = next(self._seq)
            await self.api.heartbeat([Beat(w, self.tokens[w], State.READY, seq) for w in ids])
            now = time.monotonic()
            self.last_beat.update(dict.fromkeys(ids, now))
            await asyncio.sleep(BEAT_EVERY)


async def disruption(api: StatusdAPI) -> dict[str, Any]:
    status, body = await api._json("GET", "/v1/reports/stale")
    assert status == 200, body
    return dict(body["disruption"])


async def states(api: StatusdAPI) -> dict[str, State]:
    return await api.states("suite:disruption")


def count(states_now: dict[str, State], ids: list[str], state: State) -> int:
    return sum(1 for w in ids if states_now.get(w) is state)


async def report_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`statusd report stale` in a thread, so the heartbeat loop keeps beating meanwhile."""
    return await run_statusd_async(["report", "stale", *args], env)


def disruption_events(hook: WebhookReceiver) -> list[str]:
    return [e for e in hook.events() if e.startswith("disruption")]


# What is judged here (the sweeper's disruption rule over the fleet's silence, its alerts) is
# the same over either database; the verdicts' and alerts' writes are proven on both by the
# lifecycle's and the alerting's own tests.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_partition_of_most_of_the_fleet_is_a_disruption_not_120_pages(
    stack: str, fleet_settings: Settings, peer: StatusPeer, hook: WebhookReceiver
) -> None:
    ids = [f"dep-{n:03d}" for n in range(FLEET)]
    cut, kept = ids[:CUT], ids[CUT:]
    async with StatusdAPI(stack, TEST_API_TOKEN) as api:
        for w in ids:
            peer.answer(w, "READY")
        # One batch registration, as a platform registers a fleet (200 POSTs in turn took seconds).
        tokens = await api.register_batch(
            [NewWorkload(w, Kind.DEPLOYMENT, peer.url(w), LABEL) for w in ids]
        )
        assert tokens is not None and len(tokens) == FLEET
        beats = Heartbeats(api, tokens)
        loop = asyncio.create_task(beats.run())
        try:
            await wait_until(
                lambda: states(api),
                lambda s: count(s, ids, State.READY) == FLEET,
                within=SLACK,
                what="the whole fleet READY by heartbeat",
            )

            # -- the partition: 60% silent at once, their endpoints unreachable too --
            for w in cut:
                peer.fail(w, 503)
            beats.alive -= set(cut)
            await wait_until(
                lambda: disruption(api),
                lambda d: d["active"] is True,
                within=TTL + SLACK,
                what="disruption mode",
            )
            d = await disruption(api)
            assert d["stale"] >= fleet_settings.disruption_min and d["tracked"] == FLEET
            assert d["fraction"] > fleet_settings.disruption_fraction
            # Polls go on, and a good answer is applied even now.
            peer.answer(cut[0], "STOPPED")
            await wait_until(
                lambda: api.workload(cut[0]),
                lambda w: w["state"] == "STOPPED",
                within=SLACK,
                what="a good poll answer applied during the disruption",
            )
            await hook.wait_for(1, SLACK)
            await asyncio.sleep(10 * INTERVAL)  # many more sweeps and polls inside the mode
            now = await states(api)
            convicted = count(now, cut, State.UNREACHABLE) + count(now, cut, State.LOST)
            print(f"disruption: {d}; convicted during it: {convicted} of {CUT}")
            assert convicted <= HANDFUL
            assert count(now, kept, State.READY) == len(kept)
            assert disruption_events(hook) == ["disruption"]
            alert = next(a for a in hook.alerts if a["event"] == "disruption")
            assert alert["tracked"] == FLEET and "silent at once" in alert["text"]

            # The on-call CLI shows the banner and carries the state in its JSON.
            env = {**settings_env(fleet_settings), "COLUMNS": "250"}
            table = await report_cli(env)
            assert table.returncode == 1 and "DISRUPTION MODE" in table.stdout, table.stdout
            as_json = await report_cli(env, "--format", "json")
            assert orjson.loads(as_json.stdout)["disruption"]["active"] is True

            # -- recovery: some are deregistered (the mode holds: 99 of 180 still silent), then
            # the rest are heard from again and the mode ends by itself --
            gone, back = cut[1:GONE], cut[GONE:]
            deleted = await asyncio.gather(
                *(api._json("DELETE", f"/v1/workloads/{w}") for w in gone)
            )
            assert [status for status, _ in deleted] == [200] * len(gone)
            await wait_until(
                lambda: disruption(api),
                lambda d: d["tracked"] == FLEET - len(gone) - 1,
                within=SLACK,
                what="the deregistered ones no longer tracked",
            )
            assert (await disruption(api))["active"] is True
            for w in back:
                peer.answer(w, "READY")
            beats.alive |= set(back)
            await wait_until(
                lambda: disruption(api),
                lambda d: d["active"] is False,
                within=TTL + SLACK,
                what="disruption over by itself",
            )
            await wait_until(
                lambda: asyncio.sleep(0, disruption_events(hook)),
                lambda e: e == ["disruption", "disruption_over"],
                within=SLACK,
                what="one disruption_over alert",
            )
            await wait_until(
                lambda: states(api),
                lambda s: count(s, back + kept, State.READY) == len(back) + len(kept),
                within=SLACK,
                what="everyone heard again is READY",
            )

            # -- a 5% failure outside a disruption: UNREACHABLE at the usual timing --
            dying = kept[:DYING]
            for w in dying:
                peer.fail(w, 503)
            beats.alive -= set(dying)
            silent_from = time.monotonic()
            await wait_until(
                lambda: states(api),
                lambda s: count(s, dying, State.UNREACHABLE) == DYING,
                within=TTL + 2 * INTERVAL + SLACK,
                what="5% of the fleet UNREACHABLE",
            )
            # Never before the TTL has passed since their last heartbeat.
            took = time.monotonic() - silent_from
            print(f"5% failure: all {DYING} UNREACHABLE {took:.1f}s after their last heartbeat")
            assert took >= TTL - BEAT_EVERY
            assert (await disruption(api))["active"] is False
            await wait_until(
                lambda: asyncio.sleep(0, hook.events()),
                lambda e: e.count("unreachable") >= DYING,
                within=SLACK,
                what="their unreachable alerts",
            )
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
    unreachable_ids = {a["workload_id"] for a in hook.alerts if a["event"] == "unreachable"}
    assert set(dying) <= unreachable_ids and len(unreachable_ids - set(dying)) <= HANDFUL
    assert disruption_events(hook) == ["disruption", "disruption_over"]
