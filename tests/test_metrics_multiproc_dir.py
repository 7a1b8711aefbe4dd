"""The multiprocess directory of a process group starts empty and does not outlive its group:
files of earlier runs are wiped (never this process's own), statusd's own directory is removed at
the end while an operator's is left in place, and directories of killed groups are cleared."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from statusd.oncall import multiproc
from statusd.oncall.multiproc import ProcessGroup


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # gettempdir() answers this
    monkeypatch.delenv(multiproc.ENV, raising=False)
    yield tmp_path
    os.environ.pop(multiproc.ENV, None)


def exited_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_statusd_made_directory_is_fresh_and_removed_at_the_end(scratch: Path) -> None:
    path = multiproc.start_group(ProcessGroup.SERVE)
    assert path == scratch / f"statusd-metrics-serve-{os.getpid()}"
    assert os.environ[multiproc.ENV] == str(path) and path.is_dir()
    (path / "counter_999999.db").write_bytes(b"old run")
    (path / f"counter_{os.getpid()}.db").write_bytes(b"mine, already open")
    assert multiproc.start_group(ProcessGroup.SERVE) == path
    assert sorted(p.name for p in path.iterdir()) == [f"counter_{os.getpid()}.db"]
    multiproc.end_group(ProcessGroup.SERVE, path)
    assert not path.exists()


def test_an_operator_directory_is_emptied_of_old_runs_and_kept(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = scratch / "ops-chosen"
    chosen.mkdir()
    (chosen / "gauge_max_424242.db").write_bytes(b"old run")
    (chosen / "notes.txt").write_text("not prometheus_client's: left alone")
    monkeypatch.setenv(multiproc.ENV, str(chosen))
    assert multiproc.start_group(ProcessGroup.WORKER) == chosen
    assert sorted(p.name for p in chosen.iterdir()) == ["notes.txt"]
    multiproc.end_group(ProcessGroup.WORKER, chosen)
    assert chosen.is_dir()


def test_directories_of_killed_groups_are_cleared_live_ones_kept(scratch: Path) -> None:
    gone = exited_pid()
    orphan = scratch / f"statusd-metrics-worker-{gone}"
    orphan.mkdir()
    (orphan / f"counter_{gone}.db").write_bytes(b"x")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            busy = scratch / f"statusd-metrics-serve-{alive.pid}"
            busy.mkdir()
            path = multiproc.start_group(ProcessGroup.WORKER)
            assert not orphan.exists()
            assert busy.is_dir()  # its group still runs
            multiproc.end_group(ProcessGroup.WORKER, path)
        finally:
            alive.kill()
