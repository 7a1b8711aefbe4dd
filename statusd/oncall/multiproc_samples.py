"""The samples of a prometheus_client multiprocess group (statusd.oncall.multiproc makes its
directory): whether this process records into it, marking a process of the group dead, and the
registry a scrape renders."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, values

from statusd.oncall.multiproc import ENV


def active() -> bool:
    """True when this process records into a multiprocess directory (the variable was set before
    prometheus_client was imported here)."""
    return values.ValueClass is not values.MutexValue


def process_exited(pid: int, path: Path | None = None) -> None:
    """A process of the group is gone: drop its live-gauge files (its counters stay summed in).
    The parent names the group's directory; a child on its way out uses its environment."""
    where = str(path) if path is not None else os.environ.get(ENV)
    if where:
        multiprocess.mark_process_dead(pid, where)  # type: ignore[no-untyped-call]


def exposition_registry() -> CollectorRegistry:
    """The registry a scrape of this process renders: the whole group's samples in multiprocess
    mode, this process's own registry otherwise."""
    if not active():
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
