"""The README stays true: two quick-start commands, every setting documented, .ci/run runs them."""

from __future__ import annotations

import re
from pathlib import Path

from statusd.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, title
    return match.group(1)


def test_quick_start_is_exactly_make_run_and_make_test() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", section("Quick start"), re.S)
    assert len(blocks) == 1
    commands = [line for line in blocks[0].splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


def test_every_setting_is_in_the_configuration_table() -> None:
    table = section("Configuration")
    missing = [
        f"STATUSD_{n.upper()}" for n in Settings.model_fields if f"STATUSD_{n.upper()}" not in table
    ]
    assert not missing, f"document these in README.md ## Configuration: {missing}"


def test_ci_runs_the_same_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert script.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in script
    assert re.search(r"^make test$", script, re.M)
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "lint", "bench", "clean"):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert re.search(r"^\$\(VENV\)/\.installed: pyproject\.toml", makefile, re.M)
