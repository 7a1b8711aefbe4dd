"""Fixtures shared by the sync and alert end-to-end tests (import them into the test module).

    from tests.support.sync_fixtures import broker_url, e2e_settings, main_api, runtime, workers  # noqa: F401
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from statusd.runtime import Runtime, open_runtime
from statusd.settings import Settings
from statusd.sync import kick
from tests.conftest import settings_env
from tests.support.main_api import FakeMainAPI
from tests.support.processes import ManagedProcess
from tests.support.sync_worker import broker_db, start_beat, start_worker, stop

MAIN_TOKEN = "main-api-token-" + "z" * 20
# Short clocks so outages, backoffs and expired leases play out in seconds. Lease = max(sync_lease,
# budget + 2 x timeout + 2) = 6 s: longer than any one row's sends, as in production.
E2E_SYNC = {
    "main_api_token": MAIN_TOKEN,
    "sync_timeout": 1.0,
    "sync_budget": 2.0,
    "sync_attempts": 4,
    "sync_backoff_max": 1.0,
    "sync_interval": 1.0,
    "sync_lease": 1.0,
    "sync_concurrency": 16,
    "sweep_interval": 3600.0,  # beat also schedules sweeps; nobody consumes queue sweep here
}


@pytest.fixture
async def main_api() -> AsyncIterator[FakeMainAPI]:
    """The fake main API, NOT started: each test decides when it comes up."""
    fake = FakeMainAPI(MAIN_TOKEN)
    yield fake
    await fake.stop()


@pytest.fixture
def broker_url(redis_server: str) -> Iterator[str]:
    with broker_db(redis_server) as url:
        yield url


@pytest.fixture
def e2e_settings(make_settings: Callable[..., Settings], main_api: FakeMainAPI, broker_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return make_settings(**{"main_api_url": main_api.url, "broker_url": broker_url, **E2E_SYNC, **overrides})

    return make


@pytest.fixture
def open_runtimes() -> Iterator[list[Runtime]]:
    opened: list[Runtime] = []
    yield opened


@pytest.fixture
async def runtime_for(open_runtimes: list[Runtime]) -> AsyncIterator[Callable[[Settings], Any]]:
    """Open the producer side the way statusd processes do (ledger with the sync kick listener)."""

    async def open_(settings: Settings) -> Runtime:
        rt = await open_runtime(settings, redis_max_connections=64)
        open_runtimes.append(rt)
        return rt

    yield open_
    for rt in open_runtimes:
        await rt.close()
    kick.close()


class Workers:
    """Sync worker / beat processes of one test; all reaped at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[ManagedProcess] = []

    def worker(self, settings: Settings, concurrency: int = 2) -> ManagedProcess:
        proc = start_worker(settings_env(settings), self.log_dir, concurrency=concurrency)
        self.procs.append(proc)
        return proc

    def beat(self, settings: Settings) -> ManagedProcess:
        proc = start_beat(settings_env(settings), self.log_dir)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            stop(proc)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    group = Workers(tmp_path / "procs")
    try:
        yield group
    finally:
        group.close()
