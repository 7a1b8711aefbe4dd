"""The import-linter contracts of pyproject.toml (run by `make lint`): statusd keeps them, every
module sits in a layer, and a bad import in a copy of the package does break them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the `statusd` package found under `root`, with the repository's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_of_statusd(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "statusd", tmp_path / "statusd", ignore=shutil.ignore_patterns("web"))
    return tmp_path


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def layer_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = next(
        c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    )
    return [name.strip() for layer in layers for name in layer.split(":")]


def test_statusd_keeps_its_import_contracts() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_module_is_placed_in_a_layer() -> None:
    placed = layer_modules()
    packages = {
        "statusd",
        "statusd.celery",
        "statusd.access",
    }  # parents of layers, no code of their own
    for path in sorted((ROOT / "statusd").rglob("*.py")):
        parts = ["statusd", *path.relative_to(ROOT / "statusd").with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        if module in packages:
            continue
        assert any(module == p or module.startswith(p + ".") for p in placed), (
            f"{module} is in no layer of [tool.importlinter] in pyproject.toml"
        )


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    root = copy_of_statusd(tmp_path)
    append(root / "statusd" / "runtime.py", "\nfrom statusd.sync import kick as _kick  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "statusd.runtime is not allowed to import statusd.sync" in result.stdout


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    root = copy_of_statusd(tmp_path)
    # statusd.sync.drain imports statusd.sync.outbox; a function-level import back closes a loop.
    append(
        root / "statusd" / "sync" / "outbox.py",
        "\n\ndef _loop() -> object:\n    from statusd.sync import drain\n\n    return drain\n",
    )
    result = lint_imports(root)
    assert result.returncode != 0
    assert "No cycles are allowed in statusd.sync" in result.stdout
