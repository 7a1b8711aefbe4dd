"""Every statusd process starts through the CLI, and its start is mostly imports: a module that
pulls in an area the process never uses costs each such process CPU. These hold the loading
rules the start-up cost depends on, each in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(imports: str) -> set[str]:
    """The module names loaded by a fresh interpreter after `imports` (Python statements)."""
    code = f"import sys\n{imports}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(done.stdout.split())


def test_worker_verb_leaves_prometheus_client_to_the_worker() -> None:
    # `statusd worker` sets PROMETHEUS_MULTIPROC_DIR before the first import of prometheus_client;
    # had the CLI imported it already, the worker would have to run itself a second time.
    loaded = loaded_after("import statusd.cli, statusd.cli.worker")
    assert "statusd.cli.worker" in loaded
    assert "prometheus_client" not in loaded


@pytest.mark.parametrize(
    "module",
    [
        "statusd.oncall.multiproc",
        "statusd.oncall.events",
        "statusd.oncall.metrics_thread",
        "statusd.api.error_responses",
    ],
)
def test_a_single_module_of_the_api_or_on_call_loads_no_routes(module: str) -> None:
    loaded = loaded_after(f"import {module}")
    assert module in loaded
    heavy = {"statusd.api.routes", "statusd.api.openapi", "statusd.oncall.endpoints"}
    heavy |= {"statusd.oncall.login", "statusd.oncall.page"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_the_worker_metrics_listener_does_not_load_the_aiohttp_endpoint() -> None:
    loaded = loaded_after("import statusd.oncall.metrics_thread")
    assert "statusd.oncall.metrics_endpoint" not in loaded
    assert "statusd.oncall.fleet_collector" not in loaded


def test_serve_and_consume_load_celery_only_to_kick_a_drain() -> None:
    # Every Runtime gets the drain-kick hook; building it must not load Celery, which a `serve`
    # or `consume` process needs only on its first kick.
    loaded = loaded_after("import statusd.serving, statusd.ingest.consumer, statusd.wiring")
    assert "statusd.celery.drain_kick" in loaded
    assert not {"celery", "kombu"} & loaded, sorted({"celery", "kombu"} & loaded)


def test_the_ingest_streams_load_without_the_web_side_and_the_consumers() -> None:
    # The worker replays streams after a Redis loss (statusd.recovery): it needs `streams` only.
    loaded = loaded_after("import statusd.ingest.streams")
    unwanted = {"statusd.ingest.mount", "statusd.ingest.consumer", "aiohttp.web"}
    assert not loaded & unwanted, sorted(loaded & unwanted)
