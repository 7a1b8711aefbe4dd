"""Foundation verbs as real subprocesses: --help, migrate, serve (--workers), workloads, lifecycle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from statusd.db import create_engine
from statusd.dev_secrets import load_or_create
from statusd.lifecycle import Kind
from statusd.registry import register
from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.processes import (
    assert_no_process_left,
    assert_tree_gone,
    free_port,
    run_statusd,
    running_statusd,
    stop_process,
)


def run(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return run_statusd(args, env, cwd=cwd)


def bare_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")}
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def test_help_lists_the_foundation_verbs() -> None:
    result = run(["--help"], bare_env())
    assert result.returncode == 0
    for verb in ("up", "serve", "migrate", "workloads", "lifecycle"):
        assert f" {verb} " in result.stdout, verb
    workloads = run(["workloads", "--help"], bare_env())
    assert " list " in workloads.stdout and " show " in workloads.stdout


def test_migrate_creates_the_schema_and_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "fresh.db"
    env = bare_env(STATUSD_DATABASE_URL=f"sqlite:///{db}")
    first = run(["migrate"], env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert db.exists()
    again = run(["migrate"], env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_migrate_names_an_unreachable_database(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = run(
        ["migrate"],
        bare_env(STATUSD_DATABASE_URL=f"postgresql://statusd:pw@127.0.0.1:{port}/x"),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr and "Traceback" not in result.stderr
    assert "pw" not in result.stderr  # the password is not printed


@pytest.mark.parametrize("missing", ["STATUSD_SECRET", "STATUSD_API_TOKEN"])
def test_serve_refuses_to_start_without_secrets(tmp_path: Path, missing: str) -> None:
    env = bare_env(
        STATUSD_SECRET="s" * 40,
        STATUSD_API_TOKEN="t" * 40,
        STATUSD_REDIS_URL="redis://127.0.0.1:1/0",
    )
    del env[missing]
    result = run(["serve"], env, cwd=tmp_path)
    assert result.returncode == 2 and missing in result.stderr and "Traceback" not in result.stderr


def test_lifecycle_prints_each_kind() -> None:
    result = run(["lifecycle"], bare_env())
    assert result.returncode == 0
    for word in ("training", "notebook", "deployment", "SUCCEEDED", "IDLE", "DEGRADED"):
        assert word in result.stdout


def listening(parent: int, port: int) -> list[psutil.Process]:
    """Descendants of `parent` with a listening socket on `port`."""
    found = []
    for proc in psutil.Process(parent).children(recursive=True):
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in conns):
            found.append(proc)
    return found


def test_serve_with_two_workers_shares_the_port_and_stops_cleanly(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(port=port, consumers=0)
    url = f"http://127.0.0.1:{port}/readyz"
    with running_statusd(
        ["serve", "--workers", "2", "--consumers", "0"],
        env=settings_env(settings),
        ready_url=url,
        log_dir=tmp_path,
    ) as proc:
        deadline = time.monotonic() + 60
        servers = listening(proc.pid, port)
        while len(servers) < 2 and time.monotonic() < deadline:  # the second may still be importing
            time.sleep(0.2)
            servers = listening(proc.pid, port)
        assert len(servers) == 2, proc.log_tail()
        proc.remember_descendants()
        assert stop_process(proc, signal.SIGTERM) == 0
    assert_tree_gone(proc)
    assert_no_process_left(f"--port {port}")


async def test_workloads_list_and_show_read_the_database(
    settings: Settings, tmp_path: Path
) -> None:
    engine = create_engine(settings.database_url)
    try:
        await register(engine, "cli-a", Kind.TRAINING, labels={"owner": "ana"})
        await register(engine, "cli-b", Kind.NOTEBOOK)
    finally:
        await engine.dispose()
    env = settings_env(settings)
    listed = run(["workloads", "list", "--json", "--label", "owner:ana"], env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)["items"]] == ["cli-a"]
    table = run(["workloads", "list"], {**env, "COLUMNS": "200"}, cwd=tmp_path)
    assert "cli-a" in table.stdout and "cli-b" in table.stdout
    shown = run(["workloads", "show", "cli-b", "--json"], env, cwd=tmp_path)
    assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "PENDING"
    missing = run(["workloads", "show", "nope"], env, cwd=tmp_path)
    assert missing.returncode == 2 and "not registered" in missing.stderr
    bad = run(["workloads", "list", "--kind", "batch"], env, cwd=tmp_path)
    assert bad.returncode == 2 and "kind" in bad.stderr
    assert TEST_API_TOKEN not in listed.stdout


def test_dev_secrets_are_generated_once_0600_and_env_wins(tmp_path: Path) -> None:
    first = load_or_create(tmp_path / "state", environ={})
    assert first.created and oct(first.path.stat().st_mode & 0o777) == "0o600"
    again = load_or_create(tmp_path / "state", environ={})
    assert not again.created and again.values == first.values
    overridden = load_or_create(
        tmp_path / "state", environ={"STATUSD_API_TOKEN": "mine-" + "x" * 20}
    )
    assert overridden.api_token == "mine-" + "x" * 20
    assert overridden.values["STATUSD_SECRET"] == first.values["STATUSD_SECRET"]
