"""Two real `statusd beat` processes: only the lease holder sends; the other takes over when the
leader is SIGKILLed, and a leader that stalled past its lease sends nothing once it wakes up."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from statusd.keys import Keys
from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, TEST_SECRET, settings_env
from tests.support.celery_procs import broker, running_beat, running_worker
from tests.support.processes import ManagedProcess

LEASE_MS = 3000
LEASE_S = LEASE_MS / 1000
SENT = "Sending due task sweep"
# A busy shared machine can delay a process by seconds; every wait below is bounded by this.
WAIT_S = 60.0


@pytest.fixture
def env(
    redis_server: str, redis_prefix: str, sqlite_url: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    with broker("redis", tmp_path) as broker_url:
        settings = Settings(
            database_url=sqlite_url,
            redis_url=redis_server,
            redis_prefix=redis_prefix,
            broker_url=broker_url,
            secret=TEST_SECRET,
            api_token=TEST_API_TOKEN,
            state_dir=tmp_path / "state",
            log_format="json",
            sweep_interval=0.3,
            sync_interval=60,
            beat_lease_ms=LEASE_MS,
        )
        yield settings_env(settings)


def sends(proc: ManagedProcess) -> int:
    return proc.log_tail(10_000_000).count(SENT)


def wait_until(what: str, check: object, proc: ManagedProcess, within: float = WAIT_S) -> float:
    """Poll `check()` until true; returns the seconds it took. Fails with the log tail."""
    assert callable(check)
    start = time.monotonic()
    while time.monotonic() - start < within:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not within {within}s: {what}\n{proc.log_tail()}")


def test_only_the_leader_sends_and_the_standby_takes_over_after_sigkill(
    env: dict[str, str], tmp_path: Path
) -> None:
    with running_beat(env, tmp_path / "a") as a:
        wait_until("a leads", lambda: "beat.leader_acquired" in a.log_tail(10_000_000), a)
        with running_beat(env, tmp_path / "b") as b:
            wait_until("b stands by", lambda: "beat.standby" in b.log_tail(10_000_000), b)
            before = sends(a)
            # Several lease periods: the standby keeps trying, and never wins nor sends.
            wait_until("a keeps sending", lambda: sends(a) >= before + 20, a)
            time.sleep(2 * LEASE_S)
            assert sends(a) > before + 20
            assert sends(b) == 0, "the standby sent while the leader held the lease"
            assert "beat.leader_acquired" not in b.log_tail(10_000_000)

            a.kill_tree()  # SIGKILL: no release, the lease has to run out
            killed = time.monotonic()
            wait_until("b sends after taking over", lambda: sends(b) >= 1, b)
            took_over = time.monotonic() - killed
            assert "beat.leader_acquired" in b.log_tail(10_000_000)
            # The lease outlives the leader by up to its ttl, and the standby tries every sixth
            # of it; the slack is for a machine busy with other test runs.
            assert took_over <= LEASE_S * (1 + 1 / 6) + 5.0, f"took over after {took_over:.1f}s"
            wait_until("b keeps sending", lambda: sends(b) >= 5, b)


def test_a_leader_that_stalled_past_its_lease_sends_nothing_after_waking(
    env: dict[str, str], tmp_path: Path
) -> None:
    with running_beat(env, tmp_path / "a") as a:
        wait_until("a leads", lambda: "beat.leader_acquired" in a.log_tail(10_000_000), a)
        with running_beat(env, tmp_path / "b") as b:
            wait_until("b stands by", lambda: "beat.standby" in b.log_tail(10_000_000), b)
            wait_until("a sends", lambda: sends(a) >= 3, a)

            a.send(signal.SIGSTOP)  # a GC pause / frozen VM, longer than the lease
            try:
                frozen_sends = sends(a)
                wait_until(
                    "b takes over", lambda: "beat.leader_acquired" in b.log_tail(10_000_000), b
                )
                wait_until("b sends", lambda: sends(b) >= 3, b)
            finally:
                a.send(signal.SIGCONT)
            wait_until("a notices it lost", lambda: "beat.leader_lost" in a.log_tail(10_000_000), a)
            b_at_wake = sends(b)
            wait_until("b keeps sending", lambda: sends(b) >= b_at_wake + 10, b)
            assert sends(a) == frozen_sends, "the stalled leader sent after its lease had passed"
            assert "beat.leader_lost" not in b.log_tail(10_000_000)


def test_a_leader_stopped_cleanly_hands_over_without_waiting_for_the_lease(
    env: dict[str, str], tmp_path: Path
) -> None:
    with running_beat(env, tmp_path / "a") as a:
        wait_until("a leads", lambda: "beat.leader_acquired" in a.log_tail(10_000_000), a)
        with running_beat(env, tmp_path / "b") as b:
            wait_until("b stands by", lambda: "beat.standby" in b.log_tail(10_000_000), b)
            a.send(signal.SIGTERM)
            assert a.wait(WAIT_S) == 0
            assert "beat.leader_released" in a.log_tail(10_000_000)
            # Released, not left to expire: the key is gone, or already the standby's.
            with redis_sync.Redis.from_url(env["STATUSD_REDIS_URL"]) as client:
                holder = client.get(Keys(env["STATUSD_REDIS_PREFIX"]).beat_leader)
            assert holder is None or f":{a.pid}:" not in holder.decode(), holder
            wait_until("b takes over", lambda: sends(b) >= 1, b)


def test_a_worker_with_embedded_beat_takes_part_in_the_same_election(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`statusd worker --beat` (what `statusd up` runs) uses the same lease as `statusd beat`."""
    with running_worker(env, tmp_path / "w", queues="sync", concurrency=1, beat=True) as worker:
        wait_until(
            "the worker's beat leads",
            lambda: "beat.leader_acquired" in worker.log_tail(10_000_000),
            worker,
        )
        with running_beat(env, tmp_path / "b") as b:
            wait_until("b stands by", lambda: "beat.standby" in b.log_tail(10_000_000), b)
            before = sends(worker)
            wait_until("the worker's beat sends", lambda: sends(worker) >= before + 10, worker)
            assert sends(b) == 0
