"""The chaos run's network namespaces (bench/chaos_netns.py) for tests: partitions with real
dropped packets. Creating namespaces needs root; elsewhere the tests that use them skip."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos_netns.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("chaos_netns", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


chaos_netns = _load()


@contextlib.contextmanager
def open_network(names: list[str]) -> Iterator[Any]:
    """A `chaos_netns.Network` with a namespace per name; removed afterwards. Skips the test
    where namespaces cannot be created (not root, no iproute2)."""
    problem = chaos_netns.problem()
    if problem is not None:
        pytest.skip(problem)
    net = chaos_netns.Network()
    try:
        net.open(names, set())
        yield net
    finally:
        net.close()
