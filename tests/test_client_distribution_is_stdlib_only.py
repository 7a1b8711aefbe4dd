"""statusd-client ships as its own distribution: stdlib only, Python 3.9+, typed, installable.

Reads what pip recorded when the venv installed it; checks every import in the package is the
standard library or itself, and that the source parses as Python 3.9.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys

from tests.support.fleet_api import ROOT

CLIENT = ROOT / "clients" / "python"
PACKAGE = CLIENT / "src" / "statusd_client"


def test_the_installed_distribution_has_no_dependencies_and_says_python_3_9() -> None:
    # What `pip install ./clients/python` (the Makefile's install step) recorded.
    metadata = importlib.metadata.metadata("statusd-client")
    assert metadata["Requires-Python"] == ">=3.9"
    assert not importlib.metadata.requires("statusd-client")
    assert (PACKAGE / "py.typed").is_file()


def test_every_import_is_the_standard_library_and_parses_as_python_3_9() -> None:
    foreign = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in (
                    "statusd_client",
                    "__future__",
                ):
                    foreign.append(f"{path.name}: {module}")
    assert not foreign, foreign
