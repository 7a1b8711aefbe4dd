"""`statusd up` as a user runs it: ready on /readyz, usable with the printed token, Ctrl-C leaves nothing.

Runs the real console script in a temp working directory with its own state dir, SQLite file, port
and an embedded redis-server (`--embedded-redis`, so the machine's shared 6379 is never touched).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import urllib.request
from pathlib import Path

from tests.support.processes import (
    assert_no_process_left,
    assert_tree_gone,
    free_port,
    start_statusd,
    stop_process,
    wait_for_http,
    wait_for_log,
)


def up_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")}
    env.update(
        STATUSD_STATE_DIR=str(tmp_path / "state"),
        STATUSD_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'statusd.db'}",
        STATUSD_PORT=str(port),
        STATUSD_LOG_FORMAT="json",
    )
    return env


def test_up_is_ready_serves_the_api_and_sigint_leaves_no_process(tmp_path: Path) -> None:
    port = free_port()
    proc = start_statusd(
        ["up", "--embedded-redis"],
        env=up_env(tmp_path, port),
        cwd=tmp_path,
        log_dir=tmp_path / "logs",
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", proc=proc, timeout=90)

        secrets_file = tmp_path / "state" / "dev-secrets.env"
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        token = re.search(r"^STATUSD_API_TOKEN=(\S+)$", secrets_file.read_text(), re.M)
        assert token is not None
        log = wait_for_log(proc, "statusd is up", timeout=30)
        assert str(secrets_file) in log and token.group(1) in log  # up says where, and the token

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/workloads",
            data=json.dumps({"id": "smoke", "kind": "training"}).encode(),
            headers={
                "Authorization": f"Bearer {token.group(1)}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
        proc.remember_descendants()
        assert any("redis-server" in " ".join(_cmdline(pid)) for pid in proc.seen_descendants)

        assert stop_process(proc, signal.SIGINT, timeout=60) == 0
    finally:
        proc.kill_tree()
    assert_tree_gone(proc)
    assert_no_process_left(str(tmp_path), f"--port {port}")


def test_up_exits_non_zero_naming_the_child_that_died(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as squatter:  # the API cannot bind: `serve` dies at start-up
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        proc = start_statusd(
            ["up", "--embedded-redis"],
            env=up_env(tmp_path, port),
            cwd=tmp_path,
            log_dir=tmp_path / "logs",
        )
        try:
            code = proc.wait(90)
        finally:
            proc.kill_tree()
    assert code == 1, proc.log_tail()
    assert "(api) exited with code" in proc.log_tail(100_000)
    assert_tree_gone(proc)
    assert_no_process_left(str(tmp_path), f"--port {port}")


def _cmdline(pid: int) -> list[str]:
    import psutil

    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []
