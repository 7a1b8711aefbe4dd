"""prometheus_client's multiprocess mode for statusd's process groups (`serve --workers N`, the
prefork Celery worker): every process of the group writes its samples to files in one directory,
and any process of the group answers a scrape with all of them.

Two traps, both handled here:
- The directory must be empty when the group starts (files of an earlier run would be summed
  in), so the parent makes a fresh one per group and removes it when the group stops.
- `PROMETHEUS_MULTIPROC_DIR` must be in the environment before prometheus_client is first
  imported: a metric created earlier keeps its in-memory value. `serve --workers` spawns fresh
  interpreters (set it in the parent before spawning); the Celery worker forks, so `statusd
  worker` sets it before its first import of prometheus_client (statusd.cli.worker).

This module only manages the directories and imports no prometheus_client, so a process can set
the variable before that import; reading the samples is statusd.oncall.multiproc_samples.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from enum import StrEnum
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


class ProcessGroup(StrEnum):
    """Process kinds that run as a group sharing one multiprocess directory."""

    SERVE = "serve"
    WORKER = "worker"


def group_dir(group: ProcessGroup, parent_pid: int | None = None) -> Path:
    """The directory of the group whose parent is `parent_pid` (this process by default)."""
    pid = os.getpid() if parent_pid is None else parent_pid
    return Path(tempfile.gettempdir()) / f"statusd-metrics-{group.value}-{pid}"


def start_group(group: ProcessGroup) -> Path:
    """Empty (or create) this group's directory and point PROMETHEUS_MULTIPROC_DIR at it, for the
    children this process starts next. An operator-chosen directory is honoured, and emptied of
    earlier runs' files too."""
    chosen = os.environ.get(ENV)
    path = Path(chosen) if chosen else group_dir(group)
    if not chosen:
        _remove_orphans()
    if path.exists():
        # Only prometheus_client's files (`<kind>_<pid>.db`), and not this process's own: a
        # worker that re-executed itself has already opened its files by the time it gets here.
        for entry in path.glob("*.db"):
            if entry.stem.rpartition("_")[2] != str(os.getpid()):
                entry.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    return path


def _remove_orphans() -> None:
    """Directories of groups whose parent was killed (SIGKILL, OOM) and could not clean up."""
    for stale in Path(tempfile.gettempdir()).glob("statusd-metrics-*-*"):
        pid = stale.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def end_group(group: ProcessGroup, path: Path) -> None:
    """Remove the directory when statusd made it (an operator's directory is left in place)."""
    if path == group_dir(group):
        shutil.rmtree(path, ignore_errors=True)
