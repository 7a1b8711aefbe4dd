"""`watch()` across a `statusd serve` restart, on SQLite and PostgreSQL: no event lost, none
repeated.

Two `serve` processes share the database. The watch follows A; A is stopped and started again
on the same port while transitions are written through B, so those are committed while no
stream is open and reach the watcher only by its reconnect with Last-Event-ID. Then more go
through A again. The watcher must yield exactly the workload's history, once each, in order.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from statusd_client import StatusdApi

from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.api_watch import Watcher
from tests.support.client_stack import running_serve
from tests.support.processes import free_port, start_statusd, stop_process, wait_for_http

ROUNDS = 4  # READY <-> DEGRADED moves per phase


@pytest.fixture
def api_settings(make_settings: Callable[..., Settings]) -> Settings:
    # No heartbeat consumers: every transition here comes through the API.
    return make_settings(consumers=0, events_ping_interval=0.5)


def flip(api: StatusdApi, workload_id: str, rounds: int) -> list[int]:
    """Move a deployment READY -> DEGRADED -> READY ... (siblings alternate without end)."""
    ids = []
    for i in range(rounds):
        result = api.transition(workload_id, "DEGRADED" if i % 2 == 0 else "READY")
        assert result.outcome == "applied" and result.transition is not None
        ids.append(result.transition.id)
    return ids


def test_watch_resumes_after_serve_restarts_without_loss_or_repeat(
    api_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = settings_env(api_settings)
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    first = start_statusd(args, env=env, log_dir=tmp_path)
    restarted = None
    try:
        wait_for_http(f"{url}/readyz", proc=first)
        with (
            running_serve(api_settings, tmp_path) as other,
            StatusdApi(url, TEST_API_TOKEN) as api,
            StatusdApi(other.url, TEST_API_TOKEN) as via_other,
        ):
            api.register("dep-1", "deployment")
            with Watcher(api, workload_id="dep-1") as watcher:
                api.transition("dep-1", "DEPLOYING")
                api.transition("dep-1", "READY")
                written = [t.id for t in api.history("dep-1")]
                watcher.wait_for(lambda seen: len(seen) >= len(written), what="the first events")

                assert stop_process(first, signal.SIGTERM) == 0  # the stream drops
                written += flip(via_other, "dep-1", ROUNDS)  # committed while A is down
                restarted = start_statusd(args, env=env, log_dir=tmp_path)
                wait_for_http(f"{url}/readyz", proc=restarted)
                written += flip(api, "dep-1", ROUNDS)  # and through A again

                events = watcher.wait_for(
                    lambda seen: len(seen) >= len(written), what="every transition"
                )
            assert [e.id for e in events] == written  # none lost, none repeated, in order
            assert [e.id for e in events] == [t.id for t in api.history("dep-1")]
    finally:
        for proc in (first, restarted):
            if proc is not None:
                proc.kill_tree()
