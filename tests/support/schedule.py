"""Test order for `pytest -n N --dist worksteal`: the longest tests start first on every worker.

worksteal hands worker i the i-th contiguous block of the collected order, then lets an idle
worker take the tail of a busy worker's queue. So the order is built as N blocks, one per worker,
balanced by expected time (longest first into the lighter block: LPT), each block longest first:
every worker starts on a long run at once, the tails that get stolen are the short tests, and no
long run is left to start last while the other worker idles.

Expected times come from `tests/durations.json` (seconds per test id: setup + call + teardown,
from a whole-suite run); `pytest --store-durations` rewrites it from the run it ends. A test not
in it counts as UNKNOWN_SLOW_S when marked `slow`, else UNKNOWN_S.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).resolve().parents[1] / "durations.json"
UNKNOWN_S = 0.5
UNKNOWN_SLOW_S = 30.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"write each test's time (setup + call + teardown) into {DURATIONS.name}",
    )


def load_durations(path: Path = DURATIONS) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return {}


def expected_seconds(item: pytest.Item, known: dict[str, float]) -> float:
    if item.nodeid in known:
        return known[item.nodeid]
    return UNKNOWN_SLOW_S if item.get_closest_marker("slow") else UNKNOWN_S


def blocks(weights: list[float], workers: int) -> list[list[int]]:
    """Indices of `weights` in `workers` blocks of the sizes worksteal sends (the first idle
    worker n // workers, the next a share of the rest, ...), balanced by weight, each heaviest
    first. Equal weights keep their collection order (the sort is stable)."""
    remaining, sizes = len(weights), []
    for left in range(workers, 0, -1):
        sizes.append(remaining // left)
        remaining -= sizes[-1]
    chosen: list[list[int]] = [[] for _ in range(workers)]
    totals = [0.0] * workers
    for index in sorted(range(len(weights)), key=lambda i: -weights[i]):
        open_blocks = [b for b in range(workers) if len(chosen[b]) < sizes[b]]
        target = min(open_blocks, key=lambda b: totals[b])
        chosen[target].append(index)
        totals[target] += weights[index]
    return chosen


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The same order on every xdist worker (worksteal refuses differing collections): it depends
    # only on the collected ids, the durations file and the worker count.
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    known = load_durations()
    weights = [expected_seconds(item, known) for item in items]
    ordered = [items[i] for block in blocks(weights, workers) for i in block]
    items[:] = ordered


class DurationStore:
    """Sums each test's phases as the reports arrive (from every xdist worker), then merges them
    into the durations file: tests this run did not collect keep their entries."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] += report.duration

    @pytest.hookimpl
    def pytest_sessionfinish(self) -> None:
        merged = {**load_durations(), **{k: round(v, 2) for k, v in self.seconds.items()}}
        DURATIONS.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    # Only the controller stores (under xdist the workers' reports all reach it).
    if config.getoption("--store-durations") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(DurationStore(), "statusd-duration-store")
