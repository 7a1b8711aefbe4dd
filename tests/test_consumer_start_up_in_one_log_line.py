"""`statusd serve` says in one line what its consumers took at start (`consumers.took_shards`),
not one line per shard; later acquisitions and hand-overs stay one line each; both log formats.

A second `serve` joining takes its share after start: the first logs each hand-over
(`consumer.shard_released`), the second each acquisition (`consumer.shard_acquired`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from statusd.ingest.balancing import shard_ranges
from statusd.settings import Settings
from tests.conftest import settings_env
from tests.support.client_stack import wait_for
from tests.support.processes import free_port, running_statusd

SHARDS = 16


def serve_args() -> list[str]:
    return ["serve", "--host", "127.0.0.1", "--port", str(free_port()), "--consumers", "2"]


def events(log: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def expand(ranges: str) -> list[int]:
    out: list[int] = []
    for part in ranges.split(","):
        if part == "none":
            continue
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def test_shard_ranges_are_short() -> None:
    assert shard_ranges([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert shard_ranges([]) == "none"
    assert expand(shard_ranges(list(range(16)))) == list(range(16))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_start_is_one_line_and_later_moves_one_line_each(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(stream_shards=SHARDS, shard_lease_ms=3000, log_format="json")
    env = settings_env(settings)
    with running_statusd(serve_args(), env=env, log_dir=tmp_path / "a") as first:
        took = wait_for(
            lambda: [
                e for e in events(first.log_tail(10**7)) if e["event"] == "consumers.took_shards"
            ],
            lambda found: bool(found),
            within=60,
            what="the start-up line",
        )
        log = events(first.log_tail(10**7))
        assert len(took) == 1
        assert not [e for e in log if e["event"] == "consumer.shard_acquired"]
        held = took[0]["held"]
        assert isinstance(held, dict) and len(held) == 2
        shards = sorted(i for ranges in held.values() for i in expand(str(ranges)))
        assert shards == list(range(SHARDS)) and took[0]["taken"] == SHARDS
        assert sorted(len(expand(str(r))) for r in held.values()) == [8, 8]  # split at once

        with running_statusd(serve_args(), env=env, log_dir=tmp_path / "b") as second:
            acquired = wait_for(
                lambda: [
                    e
                    for e in events(second.log_tail(10**7))
                    if e["event"] == "consumer.shard_acquired"
                ],
                lambda found: len(found) >= SHARDS // 2,
                within=60,
                what="the second process's share, one line per shard",
            )
            joined = [
                e for e in events(second.log_tail(10**7)) if e["event"] == "consumers.took_shards"
            ]
            assert len(joined) == 1
            released = [
                e for e in events(first.log_tail(10**7)) if e["event"] == "consumer.shard_released"
            ]
            moved = {int(str(e["shard"])) for e in acquired}
            first_round = set(expand(",".join(str(r) for r in joined[0]["held"].values())))  # type: ignore[union-attr]
            assert {int(str(e["shard"])) for e in released} >= moved - first_round
            assert len(acquired) == len(moved)  # one line per shard taken


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_console_format_says_it_in_one_line_too(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = settings_env(make_settings(stream_shards=SHARDS, log_format="console"))
    with running_statusd(serve_args(), env=env, log_dir=tmp_path) as proc:
        log = wait_for(
            lambda: proc.log_tail(10**7),
            lambda text: "consumers.took_shards" in text,
            within=60,
            what="the start-up line",
        )
        lines = [line for line in log.splitlines() if "consumers.took_shards" in line]
        assert len(lines) == 1 and "taken=16" in lines[0], lines
        assert "consumer.shard_acquired" not in log
