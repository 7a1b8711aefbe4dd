"""The suite's own order (tests.support.schedule): worksteal's first blocks are balanced by
expected time, each starts with its longest test, and the sizes are the ones worksteal sends."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.schedule import blocks, load_durations


def test_each_block_starts_longest_first_and_the_blocks_balance() -> None:
    weights = [170.0, 1.0, 90.0, 0.1, 80.0, 0.2, 0.3, 60.0, 0.1, 0.1]
    first, second = blocks(weights, 2)
    assert (len(first), len(second)) == (5, 5)  # worksteal sends n // 2, then the rest
    assert first[0] == 0 and second[0] == 2  # the two longest start at once, one per worker
    for block in (first, second):
        assert [weights[i] for i in block] == sorted((weights[i] for i in block), reverse=True)
    assert sorted(first + second) == list(range(len(weights)))
    totals = [sum(weights[i] for i in block) for block in (first, second)]
    # The best split of the four long ones is 170 + 60 | 90 + 80 (or 170 | 90 + 80 + 60): 230.
    assert max(totals) < 231.0 and min(totals) > 170.0, totals


def test_uneven_counts_follow_worksteal_and_one_worker_is_longest_first() -> None:
    weights = [5.0, 4.0, 3.0, 2.0, 1.0]
    assert [len(b) for b in blocks(weights, 2)] == [2, 3]
    assert [len(b) for b in blocks(weights, 3)] == [1, 2, 2]
    assert blocks(weights[::-1], 1) == [[0, 1, 2, 3, 4][::-1]]
    assert blocks([], 2) == [[], []]


def test_the_durations_file_is_read_as_seconds_per_test_id(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    path.write_text(json.dumps({"tests/test_a.py::test_x[sqlite]": 12.5}))
    assert load_durations(path) == {"tests/test_a.py::test_x[sqlite]": 12.5}
    assert load_durations(tmp_path / "missing.json") == {}
