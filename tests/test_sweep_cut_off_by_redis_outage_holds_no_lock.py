"""A sweep cut off by a Redis outage does not hold back the sweeps after it: the sweep lock it
could not release (Redis gone at the release, and back with its data from the AOF) expires
within its short TTL, so a sweep runs again seconds after Redis returns, not after the sweep's
whole time limit.

Real `statusd worker --beat` and a real redis-server restarted by the test. The sweep is made
long (a few hundred thousand stale ids to read and look up) so the test sees it holding the lock;
then the worker's processes are frozen (SIGSTOP) and the lock is read again: still held by the
same sweep, that sweep is certainly mid-flight (a frozen process releases nothing), however slow
or fast the machine. Redis is stopped while the worker is frozen, so the thawed sweep meets the
outage before its release. A sweep that released just before the freeze is simply waited out.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis as redis_sync

from statusd.keys import Keys
from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, TEST_SECRET, settings_env
from tests.support.celery_procs import running_worker
from tests.support.processes import ManagedProcess
from tests.support.redis_proc import RedisProcess

STALE_IDS = 300_000
# Longer than any command in flight when the worker is frozen takes to reach Redis and run.
SETTLE_S = 0.5
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


def resume(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.resume()


def freeze_a_sweep_holding_the_lock(
    url: str, keys: Keys, worker: ManagedProcess
) -> list[psutil.Process]:
    """Stop (SIGSTOP) the worker and its pool's processes while a sweep holds the lock: the
    same lock token before the freeze and SETTLE_S into it. Returns the frozen processes."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if worker.returncode is not None:
            raise AssertionError(
                f"the worker exited with {worker.returncode}:\n{worker.log_tail()}"
            )
        first = lock_holder(url, keys)
        if first is not None:
            root = psutil.Process(worker.pid)
            procs = [root, *root.children(recursive=True)]
            for proc in procs:
                proc.suspend()
            time.sleep(SETTLE_S)
            if lock_holder(url, keys) == first:
                return procs
            resume(procs)  # that sweep released just before the freeze: wait for the next
        time.sleep(0.005)
    raise AssertionError(f"no sweep held the lock within {WAIT_S}s\n{worker.log_tail()}")


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
        frozen = freeze_a_sweep_holding_the_lock(store.url, keys, worker)
        try:
            store.stop()  # a clean shutdown: the AOF keeps the lock the sweep holds
        finally:
            resume(frozen)  # the sweep goes on, meets the outage, and cannot release its lock
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
