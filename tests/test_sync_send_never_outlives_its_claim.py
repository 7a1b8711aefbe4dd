"""A row's send never outlives its claim: a claim that commits after its lease has already lapsed
(its statement queued behind a table lock for longer than the lease) does not send the row, so a
second drainer that claims the lapsed row is the only one with it in flight.

Real parts: PostgreSQL (the lock, SKIP LOCKED claims), two drain runs in this process with their
own engines and lease owners, a loopback aiohttp main API that holds every PUT for a while and
records a key that arrives while a request with it is still being processed. The write-path
merge was reverted because a batched drain sent such a row anyway: two workers, one key in
flight twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import text

from statusd.db import create_engine
from statusd.lifecycle import State
from statusd.models import OutboxStatus
from statusd.settings import Settings
from statusd.sync.drain import drain
from statusd.sync.lease import lease_seconds
from statusd.transitions import Ledger
from tests.support.loopback import LoopbackServer
from tests.support.sync_worker import outbox_rows, register_fleet, walk

TOKEN = "main-api-token-" + "h" * 20
HOLD = 0.5  # seconds the peer keeps every request in processing: both senders overlap in it


class HoldingMainAPI(LoopbackServer):
    """PUT /workloads/{id}/status: holds each request HOLD seconds; a key that arrives while a
    request with it is still held is a violation (one row in flight twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: set[str] = set()
        self.violations: list[str] = []
        self.keys: list[str] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_put("/workloads/{workload_id}/status", self._put)

    async def _put(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        await request.read()
        if key in self.in_flight:
            self.violations.append(f"key {key} sent while a request with it is in flight")
        self.keys.append(key)
        self.in_flight.add(key)
        try:
            await asyncio.sleep(HOLD)
        finally:
            self.in_flight.discard(key)
        return web.json_response({"status": "ok"})


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str:  # PostgreSQL: the lock, SKIP LOCKED
    template = request.getfixturevalue("postgres_template")
    url: str = template.new_database()
    request.addfinalizer(lambda: template.release(url))
    return url


@pytest.fixture
async def peer() -> AsyncIterator[HoldingMainAPI]:
    api = HoldingMainAPI()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    engine = create_engine(database_url, pool_size=4)
    yield Ledger(engine=engine)
    await engine.dispose()


async def _until(predicate: Callable[[], Any], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.01)


async def test_a_claim_committed_after_its_lease_lapsed_sends_nothing(
    make_settings: Callable[..., Settings], peer: HoldingMainAPI, ledger: Ledger
) -> None:
    settings = make_settings(
        main_api_url=peer.base_url,
        main_api_token=TOKEN,
        sync_timeout=1.5,  # longer than HOLD: a held request is answered, not timed out
        sync_attempts=1,
        sync_budget=0.1,
        sync_lease=0.5,  # a floor only: the lease comes from the send's own bound
    )
    await register_fleet(ledger, ["dep-late"])
    [transition_id] = await walk(ledger, "dep-late", [State.DEPLOYING])
    engines = [create_engine(settings.database_url, pool_size=2) for _ in range(2)]
    blocker = create_engine(settings.database_url, pool_size=2)
    try:
        async with blocker.connect() as lock_conn:
            # Every claim's UPDATE now waits; its lease was counted from before it waited.
            await lock_conn.execute(text("LOCK TABLE outbox IN EXCLUSIVE MODE"))

            async def claim_waiting() -> bool:
                async with blocker.connect() as probe:
                    waiting = await probe.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND wait_event_type = 'Lock'"
                        )
                    )
                    return bool(waiting.scalar_one())

            first = asyncio.create_task(drain(engines[0], settings))
            await _until(claim_waiting, "the first drainer's claim waiting on the lock")
            await asyncio.sleep(lease_seconds(settings) + 0.5)  # its lease lapses while it waits
            await lock_conn.rollback()

        async def claimed() -> bool:
            # The first drainer holds the row, or is already done with it (given back unsent).
            rows = await outbox_rows(ledger, transition_id=transition_id)
            return (
                first.done()
                or rows[0]["lease_owner"] is not None
                or rows[0]["status"] != OutboxStatus.PENDING
            )

        await _until(claimed, "the first drainer's claim committed")
        # The lease is already over: a second drainer may claim the row right away.
        second = asyncio.create_task(drain(engines[1], settings))
        reports = list(await asyncio.gather(first, second))
        # If the second claim skipped the row while the first drainer was giving it back, the
        # next run (the beat's) sends it.
        reports.append(await drain(engines[1], settings))
    finally:
        for engine in (*engines, blocker):
            await engine.dispose()

    assert peer.violations == []
    assert peer.keys == [str(transition_id)]  # sent once, by whichever drainer held a live lease
    assert sum(report.delivered for report in reports) == 1
    [row] = await outbox_rows(ledger, transition_id=transition_id)
    assert row["status"] == OutboxStatus.SYNCED and row["lease_owner"] is None
