"""A database outage is no task error in `statusd worker --beat`: while PostgreSQL refuses
connections (ALLOW_CONNECTIONS false, its sessions terminated) the `sweep` and `sync.drain_due`
tasks each log one warning per run and end, and once it is back the next beat's sweep succeeds;
Celery never logs "raised unexpected".

Real worker with beat, real Redis, real PostgreSQL. PostgreSQL only: SQLite has no server to
refuse connections (its file moved away is StorageUnavailable too:
tests/test_database_outage_is_transient.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from statusd.keys import Keys
from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, TEST_SECRET, settings_env
from tests.support.celery_procs import running_worker
from tests.support.databases import PostgresTemplate, pg_admin
from tests.support.processes import ManagedProcess, free_port

WAIT_S = 60.0  # bounded waits on a busy shared machine; nothing is asserted on speed


def last_sweep(url: str, keys: Keys) -> float:
    with redis_sync.Redis.from_url(url, socket_timeout=2) as client:
        raw = client.get(keys.sweep_last_success)
    return float(raw) if raw else 0.0


def wait_until(what: str, check: Callable[[], bool], worker: ManagedProcess) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert worker.returncode is None, f"the worker exited:\n{worker.log_tail(6000)}"
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {WAIT_S}s: {what}\n{worker.log_tail(6000)}")


@pytest.fixture
def postgres_url(postgres_template: PostgresTemplate) -> Iterator[str]:
    url = postgres_template.new_database()
    yield url
    postgres_template.release(url)


def test_sweep_and_drain_ride_a_database_outage(
    postgres_url: str, redis_server: str, redis_prefix: str, tmp_path: Path
) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    settings = Settings(
        database_url=postgres_url,
        redis_url=redis_server,
        redis_prefix=redis_prefix,
        secret=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        state_dir=tmp_path / "state",
        log_format="json",
        sweep_interval=0.3,
        sync_interval=0.3,
        main_api_url=f"http://127.0.0.1:{free_port()}",  # nothing to send: the drain only claims
        main_api_token="t" * 32,
    )
    keys = Keys(settings.redis_prefix, settings.stream_shards)
    # A silent id the sweep must look up in the database (unregistered: dropped once it can).
    with redis_sync.Redis.from_url(settings.redis_url) as client:
        client.zadd(keys.last_seen(keys.shard("ghost")), {"ghost": 1.0})
    with running_worker(
        settings_env(settings), tmp_path, queues="sweep,poll,sync", concurrency=2, beat=True
    ) as worker:
        wait_until("a first sweep", lambda: last_sweep(settings.redis_url, keys) > 0, worker)
        pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            pg_admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )
            for event in ("sweep.unavailable", "sync.drain_unavailable"):
                wait_until(event, lambda e=event: e in worker.log_tail(10_000_000), worker)  # type: ignore[misc]
        finally:
            pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        back = time.time()
        wait_until(
            "a sweep after the outage", lambda: last_sweep(settings.redis_url, keys) > back, worker
        )
        log = worker.log_tail(100_000_000)
    assert "raised unexpected" not in log, "a task failed on the outage instead of riding it"
    assert "Traceback" not in log
