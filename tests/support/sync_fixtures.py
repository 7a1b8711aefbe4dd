"""Fixtures shared by the sync and alert end-to-end tests (load with `pytest_plugins`).

pytest_plugins = ("tests.support.sync_fixtures",)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from statusd.celery import drain_kick
from statusd.runtime import Runtime
from statusd.settings import Settings
from statusd.wiring import open_runtime
from tests.support.main_api import FakeMainAPI
from tests.support.sync_worker import E2E_SYNC, MAIN_TOKEN, Workers, broker_db


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
def e2e_settings(
    make_settings: Callable[..., Settings], main_api: FakeMainAPI, broker_url: str
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return make_settings(
            **{"main_api_url": main_api.url, "broker_url": broker_url, **E2E_SYNC, **overrides}
        )

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
    drain_kick.close()


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Workers]:
    """The test's worker and beat processes, stopped off the event loop: the fake main API runs
    on it, and a worker's warm shutdown waits for drains that are talking to it."""
    group = Workers(tmp_path / "procs")
    try:
        yield group
    finally:
        await asyncio.to_thread(group.close)
