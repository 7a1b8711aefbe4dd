"""A restart of the Redis that is both statusd's store and Celery's broker (AOF on, as the compose
file runs it) never ends `statusd worker --beat`: after every restart beat keeps sending and the
worker keeps sweeping, and the outage is a warning in the sweep's log, never a task error.

The restarts come right after a sweep finished, while beat's next sweep and drain messages are
in flight: the moment kombu gives unacknowledged messages back on a connection Celery has closed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from statusd.keys import Keys
from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, TEST_SECRET, settings_env
from tests.support.celery_procs import running_worker
from tests.support.processes import ManagedProcess
from tests.support.redis_proc import RedisProcess

RESTARTS = 6
# Celery retries the broker every 2 s; a busy shared machine gets generous slack on top.
RECOVERY_S = 60.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "redis", appendonly=True)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def last_sweep(url: str, keys: Keys) -> float:
    try:
        with redis_sync.Redis.from_url(url, socket_timeout=1) as client:
            raw = client.get(keys.sweep_last_success)
    except redis_sync.RedisError:
        return 0.0
    return float(raw) if raw else 0.0


def wait_for_sweep_after(at: float, url: str, keys: Keys, worker: ManagedProcess) -> None:
    """A sweep finished after `at` (unix time), with the worker still running."""
    deadline = time.monotonic() + RECOVERY_S
    while time.monotonic() < deadline:
        if worker.returncode is not None:
            raise AssertionError(
                f"the worker exited with {worker.returncode}:\n{worker.log_tail(6000)}"
            )
        if last_sweep(url, keys) > at:
            return
        time.sleep(0.1)
    raise AssertionError(f"no sweep within {RECOVERY_S}s of a Redis restart:\n{worker.log_tail()}")


def test_worker_with_beat_keeps_sweeping_across_redis_restarts(
    store: RedisProcess, sqlite_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=sqlite_url,
        redis_url=store.url,
        redis_prefix=redis_prefix,
        secret=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        state_dir=tmp_path / "state",
        log_format="json",
        sweep_interval=0.3,
        sync_interval=0.5,
    )
    keys = Keys(settings.redis_prefix, settings.stream_shards)
    env = settings_env(settings)
    with running_worker(
        env, tmp_path, queues="sweep,poll,sync", concurrency=2, beat=True
    ) as worker:
        wait_for_sweep_after(0.0, store.url, keys, worker)
        for _ in range(RESTARTS):
            wait_for_sweep_after(time.time(), store.url, keys, worker)
            store.restart()  # same port; the AOF brings the data (and Celery's queues) back
            wait_for_sweep_after(time.time(), store.url, keys, worker)
        assert worker.returncode is None
        log = worker.log_tail(100_000_000)
    assert "Unrecoverable error" not in log
    assert "raised unexpected" not in log, "a task failed on the outage instead of riding it"
