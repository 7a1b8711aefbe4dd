"""A workload process killed with SIGTERM (what Kubernetes sends) still reports its final state.

A child process runs statusd-client against a real `statusd serve`, reaches RUNNING, and gets
SIGTERM. With no handler of its own (thread or asyncio variant), the client reports STOPPED ("terminated by SIGTERM") and
the process still dies of SIGTERM. With the training's own handler installed first, that handler
runs (the client chains it) and the state it sets on the way out is what statusd records.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from statusd.settings import Settings
from tests.support.client_stack import PlatformAPI, running_serve
from tests.support.fleet_api import ROOT
from tests.support.processes import ManagedProcess, start_process, wait_for_log

# The database is not what is under test here: SQLite only (the lifecycle test covers both).
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def api(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[PlatformAPI]:
    with running_serve(make_settings(consumer_block_ms=100), tmp_path) as api:
        yield api


def _start_child(api: PlatformAPI, workload_id: str, mode: str, log_dir: Path) -> ManagedProcess:
    token = api.register(workload_id)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")}
    env.update(
        STATUSD_URL=api.url,
        STATUSD_WORKLOAD_ID=workload_id,
        STATUSD_HEARTBEAT_TOKEN=token,
        PYTHONPATH=str(ROOT),
    )
    return start_process(
        [sys.executable, "-m", "tests.support.client_child", mode],
        env=env,
        cwd=ROOT,
        log_dir=log_dir,
        name=f"client-{mode}",
    )


@pytest.mark.parametrize("mode", ["default", "async"])
def test_sigterm_with_default_disposition_reports_stopped_and_still_terminates(
    api: PlatformAPI, tmp_path: Path, mode: str
) -> None:
    child = _start_child(api, "train-term", mode, tmp_path)
    try:
        wait_for_log(child, "training", timeout=60)
        api.wait_state("train-term", "RUNNING")
        child.send(signal.SIGTERM)
        assert child.wait(30) == -signal.SIGTERM, child.log_tail()
    finally:
        child.kill_tree()
    api.wait_state("train-term", "STOPPED")
    assert api.history("train-term")[-1] == ("STOPPED", "push", "terminated by SIGTERM")


def test_sigterm_runs_the_trainings_own_handler_and_reports_what_it_set(
    api: PlatformAPI, tmp_path: Path
) -> None:
    child = _start_child(api, "train-own", "own-handler", tmp_path)
    try:
        wait_for_log(child, "training", timeout=60)
        api.wait_state("train-own", "RUNNING")
        child.send(signal.SIGTERM)
        assert child.wait(30) == 0, child.log_tail()
    finally:
        child.kill_tree()
    assert "checkpoint saved" in child.log_tail()
    api.wait_state("train-own", "SUCCEEDED")
    assert api.history("train-own")[-1] == ("SUCCEEDED", "push", "checkpoint saved on SIGTERM")
