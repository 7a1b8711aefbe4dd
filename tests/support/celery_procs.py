"""Real Celery processes for sweeper tests: `statusd worker` / `statusd beat`, and per-test brokers.

Brokers are isolated per test: a dedicated redis-server (Celery's Redis transport uses its own key
names, so a shared server would mix tests' queues) or a fresh RabbitMQ vhost (`rabbitmqctl
add_vhost` / `set_permissions`, deleted afterwards). RabbitMQ variants skip when rabbitmqctl is
not usable, except on CI (CI=true), where they fail loudly.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import ON_CI
from tests.support.processes import ManagedProcess, start_statusd, stop_process
from tests.support.redis_proc import RedisProcess

RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672

# The sweeper's end-to-end tests run on the two deployments people run: the embedded one (SQLite,
# Redis as the broker: `make run`) and the production one (PostgreSQL, RabbitMQ: compose.yaml).
# The broker and the database never meet (a task carries ids; the lifecycle owns the rows), so
# these two pairs put each backend and each broker under every such test, at half the processes
# of the full 2 x 2 matrix. Use as a decorator; the test takes `database_url` and `deployment_broker`
# (a broker URL).
DEPLOYMENTS = pytest.mark.parametrize(
    ("database_url", "deployment_broker"),
    [("sqlite", "redis"), ("postgres", "amqp")],
    indirect=True,
    ids=["sqlite-redis", "postgres-amqp"],
)
READY_TIMEOUT_S = 60.0


def _rabbitmqctl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def rabbitmq_problem() -> str | None:
    """Why the RabbitMQ variants cannot run here, or None when they can."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed"
    try:
        with socket.create_connection((RABBIT_HOST, RABBIT_PORT), timeout=1):
            pass
    except OSError:
        return f"nothing answers on {RABBIT_HOST}:{RABBIT_PORT}"
    try:
        done = _rabbitmqctl("list_vhosts", timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"rabbitmqctl failed: {exc}"
    if done.returncode != 0:
        return f"rabbitmqctl list_vhosts failed: {done.stderr.strip()[:200]}"
    return None


def require_rabbitmq() -> None:
    problem = rabbitmq_problem()
    if problem is None:
        return
    if ON_CI:
        pytest.fail(
            f"CI=true but RabbitMQ is not usable ({problem}): the amqp variants must run on CI"
        )
    pytest.skip(f"RabbitMQ not usable: {problem}")


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh vhost for one test; yields its amqp:// URL; deleted afterwards."""
    name = f"statusd-t-{uuid.uuid4().hex[:10]}"
    for args in (("add_vhost", name), ("set_permissions", "-p", name, "guest", ".*", ".*", ".*")):
        done = _rabbitmqctl(*args)
        if done.returncode != 0:
            _rabbitmqctl("delete_vhost", name)
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
    try:
        yield f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)


@contextlib.contextmanager
def broker(kind: str, tmp_path: Path) -> Iterator[str]:
    """`redis`: a dedicated redis-server for this test; `amqp`: a fresh RabbitMQ vhost."""
    if kind == "amqp":
        require_rabbitmq()
        with rabbitmq_vhost() as url:
            yield url
        return
    proc = RedisProcess(tmp_path / "broker-redis")
    url = proc.start()
    try:
        yield url
    finally:
        proc.stop()


def wait_for_log(proc: ManagedProcess, needle: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until `needle` appears in the process's log; fail with the tail if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in proc.log_tail(200_000):
            proc.remember_descendants()
            return
        if proc.returncode is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}:\n{proc.log_tail()}")
        time.sleep(0.2)
    raise AssertionError(
        f"{proc.args}: no {needle!r} in its log within {timeout}s:\n{proc.log_tail()}"
    )


@contextlib.contextmanager
def _managed(proc: ManagedProcess, ready: str) -> Iterator[ManagedProcess]:
    try:
        wait_for_log(proc, ready)
        yield proc
    finally:
        if proc.returncode is None:
            # SIGTERM is Celery's warm shutdown; bounded, then the whole tree is killed anyway.
            with contextlib.suppress(AssertionError):
                stop_process(proc, signal.SIGTERM, timeout=20)
        proc.kill_tree()


@contextlib.contextmanager
def running_worker(
    env: dict[str, str],
    log_dir: Path,
    *,
    queues: str = "sweep,poll",
    concurrency: int = 2,
    beat: bool = False,
) -> Iterator[ManagedProcess]:
    """`statusd worker` as a real process (prefork children included); ready when Celery says so."""
    args = ["worker", "--queues", queues, "--concurrency", str(concurrency)]
    if beat:
        args += ["--beat", "--schedule", str(log_dir / f"beat-{uuid.uuid4().hex[:6]}")]
    with _managed(start_statusd(args, env=env, log_dir=log_dir), " ready.") as proc:
        yield proc


@contextlib.contextmanager
def running_beat(env: dict[str, str], log_dir: Path) -> Iterator[ManagedProcess]:
    """`statusd beat` alone, with its own schedule file (two beats must not share one)."""
    schedule = log_dir / f"beat-{uuid.uuid4().hex[:6]}"
    proc = start_statusd(["beat", "--schedule", str(schedule)], env=env, log_dir=log_dir)
    with _managed(proc, "beat: Starting") as managed:
        yield managed
