"""A sweep cut off by a Redis outage does not hold back the sweeps after it: the sweep lock it
could not release (Redis gone at the release, and back with its data from the AOF) expires
within its short TTL, so a sweep runs again seconds after Redis returns, not after the sweep's
whole time limit.

Real `statusd worker --beat` and a real redis-server restarted by the test. The sweep is made
long (a few hundred thousand stale ids to read and look up) so the test can stop Redis while it
holds the lock; an attempt where the sweep finished first is simply tried again.
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

STALE_IDS = 300_000
LONG_SWEEP_S = 0.3
# Longer than what is left of the sweep: it meets the outage and cannot release its lock.
OUTAGE_S = 10.0
# Far below the sweep's time limit (the lock's TTL before), far above a short lock TTL plus one
# long sweep on a busy shared machine.
NEXT_SWEEP_WITHIN_S = 40.0
WAIT_S = 120.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "redis", appendonly=True)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def client(url: str) -> redis_sync.Redis:
    return redis_sync.Redis.from_url(url, socket_timeout=5)


def plant_stale_ids(url: str, keys: Keys) -> None:
    """Stale ids the sweep must read and look up (none is registered: it drops them after)."""
    ids = [f"ghost-{n}" for n in range(STALE_IDS)]
    with client(url) as r, r.pipeline(transaction=False) as pipe:
        for shard, part in keys.by_shard(ids).items():
            for start in range(0, len(part), 10_000):
                pipe.zadd(keys.last_seen(shard), dict.fromkeys(part[start : start + 10_000], 1.0))
        pipe.execute()


def last_sweep(url: str, keys: Keys) -> float:
    try:
        with client(url) as r:
            raw = r.get(keys.sweep_last_success)
    except redis_sync.RedisError:
        return 0.0
    return float(raw) if raw else 0.0


def wait_until(what: str, check: object, worker: ManagedProcess, within: float = WAIT_S) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if worker.returncode is not None:
            raise AssertionError(
                f"the worker exited with {worker.returncode}:\n{worker.log_tail()}"
            )
        if check():
            return
        time.sleep(0.005)
    raise AssertionError(f"not within {within}s: {what}\n{worker.log_tail()}")


def lock_holder(url: str, keys: Keys) -> bytes | None:
    try:
        with client(url) as r:
            value = r.get(keys.sweep_lock)
    except redis_sync.RedisError:
        return None
    return value if isinstance(value, bytes) else None


def a_long_sweep_holds_the_lock(url: str, keys: Keys) -> bool:
    """The same sweep holds the lock across LONG_SWEEP_S: the planted ids are being swept."""
    first = lock_holder(url, keys)
    if first is None:
        return False
    time.sleep(LONG_SWEEP_S)
    return lock_holder(url, keys) == first


def test_next_sweep_runs_soon_after_redis_returns(
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
        sweep_interval=0.5,
        sync_interval=60,
    )
    keys = Keys(settings.redis_prefix, settings.stream_shards)
    env = settings_env(settings)
    with running_worker(env, tmp_path, queues="sweep,poll", concurrency=2, beat=True) as worker:
        wait_until("a first sweep", lambda: last_sweep(store.url, keys) > 0, worker)
        plant_stale_ids(store.url, keys)
        wait_until("a long sweep", lambda: a_long_sweep_holds_the_lock(store.url, keys), worker)
        store.stop()  # a clean shutdown: the AOF keeps the lock the sweep holds
        time.sleep(OUTAGE_S)
        store.start()  # same port, same data
        returned = time.time()
        wait_until(
            "a sweep after Redis returned",
            lambda: last_sweep(store.url, keys) > returned,
            worker,
            within=NEXT_SWEEP_WITHIN_S,
        )
        log = worker.log_tail(100_000_000)
    assert "sweep.lock_release_failed" in log, "the sweep was not cut off holding its lock"
