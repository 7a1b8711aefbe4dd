"""tools/import_cycles.py: statusd has no import cycle, and the check does find one when it exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "import_cycles.py"


def run_check(*packages: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, packages)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_statusd_has_no_import_cycle() -> None:
    result = run_check(ROOT / "statusd")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "import cycles: 0" in result.stdout


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    write(pkg / "__init__.py", "")
    write(pkg / "runtime.py", "def open():\n    from pkg.sync import kick\n    return kick\n")
    write(pkg / "sync" / "__init__.py", "")
    write(pkg / "sync" / "kick.py", "from pkg import worker\n")
    write(pkg / "worker.py", "from pkg.runtime import open\n")
    result = run_check(pkg)
    assert result.returncode == 1
    assert "import cycle (3 modules)" in result.stdout
    assert "pkg.runtime -> pkg.sync.kick -> pkg.worker -> pkg.runtime" in result.stdout


def test_a_cycle_behind_a_type_checking_guard_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    write(pkg / "__init__.py", "")
    write(pkg / "a.py", "from . import b\n")
    write(
        pkg / "b.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import thing\n",
    )
    result = run_check(pkg)
    assert result.returncode == 1
    assert "pkg.a -> pkg.b -> pkg.a" in result.stdout


def test_a_layered_package_passes(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    write(pkg / "__init__.py", "")
    write(pkg / "low.py", "X = 1\n")
    write(pkg / "mid.py", "from pkg.low import X\n")
    write(pkg / "top" / "__init__.py", "from pkg import mid\n")
    write(pkg / "top" / "cli.py", "def main():\n    from pkg.top import mid\n")
    result = run_check(pkg)
    assert result.returncode == 0, result.stdout


def test_a_lower_layer_importing_upward_is_found(tmp_path: Path) -> None:
    # Named statusd, so statusd's layers apply: runtime (core) must not reach the sync area.
    pkg = tmp_path / "statusd"
    write(pkg / "__init__.py", "")
    write(pkg / "runtime.py", "def open():\n    from statusd.sync import kick\n    return kick\n")
    write(pkg / "sync" / "__init__.py", "")
    write(pkg / "sync" / "kick.py", "from statusd.runtime import open\n")
    result = run_check(pkg)
    assert result.returncode == 1
    assert (
        "upward import: statusd.runtime (core) imports statusd.sync.kick (areas)" in result.stdout
    )


def test_a_module_in_no_layer_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "statusd"
    write(pkg / "__init__.py", "")
    write(pkg / "helpers.py", "")
    result = run_check(pkg)
    assert result.returncode == 1
    assert "statusd.helpers: in no layer" in result.stdout
