"""statusd-client ships as its own distribution: stdlib only, Python 3.9+, typed, installable.

Reads what pip recorded when the venv installed it; checks every import in the package is the
standard library or itself, and that the source parses as Python 3.9. The API client (the `api`
extra) may use httpx, in its own modules only: `import statusd_client` and the heartbeat client
work in a Python where httpx cannot be imported.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys

from tests.support.fleet_api import ROOT

CLIENT = ROOT / "clients" / "python"
PACKAGE = CLIENT / "src" / "statusd_client"


# The modules of the API client that talk HTTP through httpx (the `api` extra).
HTTPX_MODULES = {"api/sync.py", "api/aio.py", "api/wire.py"}


def test_the_installed_distribution_has_no_dependencies_and_says_python_3_9() -> None:
    # What `pip install ./clients/python` (the Makefile's install step) recorded.
    metadata = importlib.metadata.metadata("statusd-client")
    assert metadata["Requires-Python"] == ">=3.9"
    requires = importlib.metadata.requires("statusd-client") or []
    assert requires, "the api extra is declared"
    assert all('extra == "api"' in r for r in requires), requires  # nothing for the base install
    assert (PACKAGE / "py.typed").is_file()


def test_heartbeat_client_imports_without_httpx() -> None:
    """A training image has no httpx: the package, its heartbeat client and the API client's
    errors import; asking for StatusdApi says which extra to install."""
    script = """
import sys
class NoHttpx:
    def find_spec(self, name, path=None, target=None):
        if name == "httpx" or name.startswith("httpx."):
            raise ModuleNotFoundError("No module named 'httpx'", name="httpx")
        return None
sys.meta_path.insert(0, NoHttpx())
import statusd_client
from statusd_client import Heartbeater, NotFound, TransitionRefused
assert "httpx" not in sys.modules
try:
    statusd_client.StatusdApi
except ImportError as exc:
    print(exc)
else:
    raise SystemExit("StatusdApi imported without httpx")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pip install 'statusd-client[api]'" in done.stdout


def test_every_import_is_the_standard_library_and_parses_as_python_3_9() -> None:
    foreign = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
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
                if top == "httpx" and name in HTTPX_MODULES:
                    continue
                if top not in sys.stdlib_module_names and top not in (
                    "statusd_client",
                    "__future__",
                ):
                    foreign.append(f"{name}: {module}")
    assert not foreign, foreign
