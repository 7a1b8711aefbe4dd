"""How many of a worker's prefork slots outbox drains may hold at once.

A drain that meets a failing main API keeps retrying for STATUSD_SYNC_BUDGET, holding its prefork
slot all that time. In a worker that serves the sweeper's queues too (one worker for `sweep,poll,
sync`, as the compose file runs it), drains could fill every slot and leave sweeps waiting: a
failing main API would slow detection. So there, drains may hold one slot at a time; a drain
task that finds it taken gives its slot back at once (statusd.celery.sync_tasks). A worker that
serves only `sync` has no limit.

The slot is an exclusive `flock` on a file of a directory the worker's main process creates
before forking: each prefork child opens the file itself, so the lock is its own, and the kernel
drops it when the child dies (SIGKILL included), so no slot is ever lost.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Drains in flight per worker when it serves the sweeper's queues too: one run keeps up to
# STATUSD_SYNC_CONCURRENCY sends in flight, so one slot is enough to drain a backlog.
SHARED_WORKER_SYNC_SLOTS = 1

_directory: Path | None = None
_limit = 0


def limit_drains(limit: int) -> Path:
    """In the worker's main process, before it forks: at most `limit` drains at once here."""
    global _directory, _limit
    _directory = Path(tempfile.mkdtemp(prefix="statusd-sync-slots-"))
    _limit = limit
    return _directory


def unlimited() -> None:
    """No limit (a worker that serves only `sync`); removes the slot files of `limit_drains`."""
    global _directory, _limit
    if _directory is not None:
        shutil.rmtree(_directory, ignore_errors=True)
    _directory, _limit = None, 0


@contextmanager
def drain_slot() -> Iterator[bool]:
    """Hold a drain slot for the block; yields False (at once, holding nothing) if all are taken."""
    if _directory is None:
        yield True
        return
    for index in range(_limit):
        fd = os.open(_directory / f"slot-{index}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield True
        finally:
            os.close(fd)  # closing the only descriptor of this open file releases the lock
        return
    yield False
