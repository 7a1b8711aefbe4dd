"""Every verb that reads STATUSD_* settings answers a bad environment with one error line and
exit code 2 (the settings loader, statusd.settings_loader, via statusd.cli.common), never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.processes import run_statusd

VERBS = [
    ["migrate"],
    ["serve"],
    ["consume"],
    ["worker"],
    ["beat"],
    ["workloads", "list"],
    ["dead-letters", "list"],
    ["sync", "status"],
    ["sync", "drain"],
    ["report", "stale"],
    ["report", "summary"],
    ["simulate", "--count", "1"],
]


def bad_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")}
    env.update(
        COLUMNS="200",
        STATUSD_STATE_DIR=str(tmp_path / "state"),
        STATUSD_DATABASE_URL=f"sqlite:///{tmp_path / 'never.db'}",
        STATUSD_STREAM_SHARDS="several",
    )
    return env


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path, verb: list[str]) -> None:
    result = run_statusd(verb, bad_env(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: invalid configuration: STATUSD_STREAM_SHARDS:"), lines[0]
    assert not (tmp_path / "never.db").exists()  # nothing was done with half a configuration
