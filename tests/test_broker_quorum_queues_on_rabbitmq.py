"""STATUSD_BROKER_QUEUE_TYPE=quorum on a real RabbitMQ: the worker declares sweep / poll / sync
as quorum queues and consumes from them (no global QoS, which quorum queues refuse); with a
Redis broker the setting is refused with a message naming it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statusd.celery.application import create_celery
from statusd.celery.names import SWEEP_TASK
from statusd.settings import BrokerQueueType, Settings
from tests.conftest import TEST_API_TOKEN, TEST_SECRET, settings_env
from tests.support.celery_procs import rabbitmq_vhost, require_rabbitmq, running_worker
from tests.support.processes import start_statusd

WAIT_S = 60.0


@pytest.fixture
def vhost_url() -> Iterator[str]:
    require_rabbitmq()
    with rabbitmq_vhost() as url:
        yield url


def queue_types(vhost: str) -> dict[str, str]:
    done = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rows = [line.split("\t") for line in done.stdout.splitlines() if "\t" in line]
    return {name: kind for name, kind in rows if name != "name"}


def test_quorum_queues_are_declared_and_consumed(
    vhost_url: str, redis_server: str, redis_prefix: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=sqlite_url,
        redis_url=redis_server,
        redis_prefix=redis_prefix,
        broker_url=vhost_url,
        broker_queue_type=BrokerQueueType.QUORUM,
        secret=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        state_dir=tmp_path / "state",
        log_format="json",
    )
    vhost = vhost_url.rsplit("/", 1)[1]
    with running_worker(
        settings_env(settings), tmp_path / "w", queues="sweep,poll,sync", concurrency=1
    ) as worker:
        types = queue_types(vhost)
        assert {q: types.get(q) for q in ("sweep", "poll", "sync")} == {
            "sweep": "quorum",
            "poll": "quorum",
            "sync": "quorum",
        }, types
        app = create_celery(settings)
        try:
            app.send_task(SWEEP_TASK, queue="sweep")
        finally:
            app.close()
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if f"Task {SWEEP_TASK}[" in worker.log_tail(1_000_000) and " succeeded in " in (
                worker.log_tail(1_000_000)
            ):
                break
            assert worker.returncode is None, worker.log_tail()
            time.sleep(0.2)
        else:
            raise AssertionError(f"the sweep was not consumed:\n{worker.log_tail()}")


def test_quorum_with_a_redis_broker_is_refused_by_name(
    redis_server: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=sqlite_url,
        redis_url=redis_server,
        broker_queue_type=BrokerQueueType.QUORUM,
        secret=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        state_dir=tmp_path / "state",
    )
    proc = start_statusd(["worker"], env=settings_env(settings), log_dir=tmp_path)
    try:
        assert proc.wait(WAIT_S) == 2
    finally:
        proc.kill_tree()
    assert "STATUSD_BROKER_QUEUE_TYPE=quorum needs a RabbitMQ broker" in proc.log_tail()
