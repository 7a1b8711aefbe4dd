"""The client README's backend flow against a real `statusd serve`, on SQLite and PostgreSQL:
register 1,000 trials in one call, watch them, stop one, list the failed ones.

The trials' containers report through their heartbeat tokens (as real ones would, over HTTP);
the watch sees every transition of the sweep once, in id order, equal to the history.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from statusd_client import (
    AlreadyRegistered,
    AsyncStatusdApi,
    BadInput,
    NotFound,
    Registration,
    StatusdApi,
    TransitionRefused,
    Unauthorized,
)

from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN
from tests.support.api_watch import Watcher
from tests.support.client_stack import running_serve

TRIALS = 1000
FAILING = ("sweep7-trial-0003", "sweep7-trial-0500", "sweep7-trial-0999")
STOPPED = "sweep7-trial-0017"


@pytest.fixture
def fast_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(consumer_block_ms=100)


def heartbeat(url: str, token: str, workload_id: str, status: str) -> None:
    """What a trial's container sends (statusd_client.Heartbeater does it from a thread)."""
    body = {"workload_id": workload_id, "status": status, "seq": time.time_ns()}
    request = urllib.request.Request(
        f"{url}/v1/heartbeats",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202


def test_register_a_thousand_watch_stop_one_list_the_failed(
    fast_settings: Settings, tmp_path: Path
) -> None:
    with (
        running_serve(fast_settings, tmp_path) as server,
        StatusdApi(server.url, TEST_API_TOKEN) as api,
    ):
        # Register 1,000 trials of a sweep in one call.
        results = api.register_many(
            Registration(f"sweep7-trial-{i:04d}", "training", labels={"sweep": "sweep7"})
            for i in range(TRIALS)
        )
        assert [r.id for r in results] == [f"sweep7-trial-{i:04d}" for i in range(TRIALS)]
        assert all(r.status == 201 and r.ok for r in results)
        tokens = {r.id: r.unwrap().heartbeat_token for r in results}

        with Watcher(api, kind="training") as watcher:
            # Three trials' containers report FAILED; a user stops another one.
            for trial in FAILING:
                heartbeat(server.url, tokens[trial], trial, "RUNNING")
                heartbeat(server.url, tokens[trial], trial, "FAILED")
            stopped = api.transition(STOPPED, "STOPPING", reason="user pressed stop")
            assert stopped.outcome == "applied" and stopped.state == "STOPPING"
            events = watcher.wait_for(
                lambda seen: len(seen) >= 2 * len(FAILING) + 1, what="every transition watched"
            )

        # Watched: each transition once, in id order, the same rows the history holds.
        assert [e.id for e in events] == sorted({e.id for e in events})
        expected = sorted(
            (t.id, t.workload_id, t.to) for trial in (*FAILING, STOPPED) for t in api.history(trial)
        )
        assert [(e.id, e.workload_id, e.to) for e in events] == expected
        assert {e.workload_id for e in events if e.to == "FAILED"} == set(FAILING)

        # The failed ones, through the cursors (a small page size makes it several pages).
        failed = api.list(state="FAILED", labels={"sweep": "sweep7"}, page_size=2)
        assert [w.id for w in failed] == sorted(FAILING)
        assert sum(1 for _ in api.list(labels={"sweep": "sweep7"}, page_size=300)) == TRIALS
        shown = api.get(STOPPED)
        assert shown.state == "STOPPING" and shown.labels == {"sweep": "sweep7"}
        assert shown.synced is None  # no main API configured here

        # Refusals are typed: the rule, the field, the code.
        with pytest.raises(TransitionRefused) as refused:
            api.transition(STOPPED, "RUNNING")
        assert refused.value.rule and refused.value.status == 409
        with pytest.raises(AlreadyRegistered):
            api.register(STOPPED, "training")
        with pytest.raises(BadInput) as bad:
            api.register("sweep7-new", "training", status_url="http://127.0.0.1:1/s\r\nX: y")
        assert bad.value.field == "status_url" and bad.value.status == 422
        with pytest.raises(NotFound):
            api.get("sweep7-never")
        again = api.register_many(
            [Registration(STOPPED, "training"), Registration("sweep7-extra", "robot")]
        )
        assert [(r.status, type(r.error)) for r in again] == [
            (409, AlreadyRegistered),
            (422, BadInput),
        ]
        assert api.deregister(STOPPED).id == STOPPED
        with pytest.raises(NotFound):
            api.get(STOPPED)
        with StatusdApi(server.url, "not-the-token") as stranger, pytest.raises(Unauthorized):
            stranger.get(FAILING[0])


async def test_the_async_client_follows_the_same_flow(
    fast_settings: Settings, tmp_path: Path
) -> None:
    with running_serve(fast_settings, tmp_path) as server:
        async with AsyncStatusdApi(server.url, TEST_API_TOKEN) as api:
            results = await api.register_many(
                {"id": f"nb-{i}", "kind": "notebook", "labels": {"team": "vision"}}
                for i in range(5)
            )
            assert [r.status for r in results] == [201] * 5
            start = (await api.recent_transitions(limit=1))["last_id"]
            watch = api.watch(workload_id="nb-2", after=start)
            applied = [await api.transition("nb-2", to) for to in ("STARTING", "READY", "IDLE")]
            seen = [await asyncio.wait_for(watch.__anext__(), 30) for _ in applied]
            await watch.aclose()
            assert [e.id for e in seen] == [a.transition.id for a in applied if a.transition]
            assert [e.to for e in seen] == ["STARTING", "READY", "IDLE"]
            listed = [w.id async for w in api.list(labels={"team": "vision"}, page_size=2)]
            assert listed == [f"nb-{i}" for i in range(5)]
            history = [t.to async for t in api.history("nb-2", page_size=1)]
            assert history == ["STARTING", "READY", "IDLE"]
            with pytest.raises(TransitionRefused) as refused:
                await api.transition("nb-2", "PENDING")
            assert refused.value.rule
