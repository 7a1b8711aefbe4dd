"""The statusd API (with its heartbeat consumers) as a subprocess, for fleet and sweeper tests.

Runs `create_app(Settings())` on 127.0.0.1:<port> in its own process, so the simulated fleet (in
the test process) and statusd use both cores, as in production. Settings come from the
environment (tests build it with `settings_env`).

    with running_api(settings, tmp_path) as api_url: ...
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from statusd.settings import Settings
from tests.support.processes import free_port, start_process, stop_process, wait_for_http

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def running_api(env: dict[str, str], log_dir: Path, *, port: int = 0) -> Iterator[str]:
    """Start the API subprocess with `env`; yield its base URL; always stop and reap it."""
    port = port or free_port()
    proc = start_process(
        [sys.executable, "-m", "tests.support.fleet_api", str(port)],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        log_dir=log_dir,
        name="statusd-api",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", proc=proc, timeout=60)
        yield url
    finally:
        if proc.returncode is None:
            with contextlib.suppress(AssertionError):
                stop_process(proc, timeout=15)
        proc.kill_tree()


def main() -> None:
    from aiohttp import web

    from statusd.app import create_app
    from statusd.logs import configure_logging

    settings = Settings()
    configure_logging(settings)
    web.run_app(
        create_app(settings), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None
    )


if __name__ == "__main__":
    main()
