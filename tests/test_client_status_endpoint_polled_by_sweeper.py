"""`serve_status` polled by the real sweeper: a silent training reaches its final state by pull.

A real `statusd serve`, `statusd worker` (sweep, poll) and `statusd beat` (Celery processes, Redis
broker). The training pushes RUNNING with a Heartbeater, then its heartbeats stop (the block is
left: the thread is gone) while its `serve_status` endpoint says SUCCEEDED. After the heartbeat
TTL the sweeper polls it and applies SUCCEEDED with source `pull`: the endpoint's seq (same clock
as the heartbeats) is newer than the last heartbeat's, so the answer is not ignored.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from statusd_client import Heartbeater, serve_status

from statusd.settings import Settings
from tests.conftest import settings_env
from tests.support.celery_procs import broker, running_beat, running_worker
from tests.support.client_stack import running_serve

TTL, INTERVAL, POLL_TIMEOUT = 1.0, 0.5, 1.0
# Detection needs TTL + a sweep interval + one poll; processes on a busy 2-core box get slack.
PULL_BOUND = TTL + INTERVAL + POLL_TIMEOUT + 30.0

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_silent_training_reaches_succeeded_through_its_status_endpoint(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    truth = {"status": "RUNNING"}
    with (
        serve_status(lambda: truth["status"], port=0, host="127.0.0.1") as endpoint,
        broker("redis", tmp_path) as broker_url,
    ):
        with urllib.request.urlopen(endpoint.url, timeout=5) as response:  # the contract's shape
            first = json.loads(response.read())
        assert first["status"] == "RUNNING" and isinstance(first["seq"], int)

        settings = make_settings(
            broker_url=broker_url,
            heartbeat_ttl=TTL,
            sweep_interval=INTERVAL,
            poll_timeout=POLL_TIMEOUT,
            start_timeout=60,  # never stale before the first heartbeat: RUNNING comes by push
            consumer_block_ms=100,
        )
        env = settings_env(settings)
        with (
            running_serve(settings, tmp_path) as api,
            running_worker(env, tmp_path, queues="sweep,poll", concurrency=2),
            running_beat(env, tmp_path),
        ):
            token = api.register("train-pull", status_url=endpoint.url)
            with Heartbeater(api.url, "train-pull", token, interval=0.2) as hb:
                hb.set("RUNNING")
                api.wait_state("train-pull", "RUNNING")
            # Heartbeats have stopped; the training finishes and only its endpoint says so.
            truth["status"] = "SUCCEEDED"
            api.wait_state("train-pull", "SUCCEEDED", within=PULL_BOUND)
            history = api.history("train-pull")
            assert [(to, source) for to, source, _ in history if to != "PENDING"] == [
                ("RUNNING", "push"),
                ("SUCCEEDED", "pull"),
            ]
