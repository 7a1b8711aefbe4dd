"""The drain's send slots (AIMD per peer): back off while the main API fails, grow back when it
recovers, never more than the ceiling in flight, and a row sleeping before a retry holds no slot.

The rules on their own first (no I/O), then the drain through a real loopback main API that
fails 20% of requests with 503, where the requests in flight are counted AT THE SERVER: never
more than STATUSD_SYNC_CONCURRENCY, and every transition delivered once, per workload in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from statusd.db import create_engine
from statusd.settings import Settings
from statusd.sync.delivery import TransientDeliveryError
from statusd.sync.drain import drain
from statusd.sync.lease import RETRY_JITTER, backoff_cap
from statusd.sync.send_slots import MIN_WINDOW, SendSlots
from statusd.transitions import Ledger
from tests.support.main_api import FakeMainAPI, Faults
from tests.support.sync_worker import produce, register_fleet

MAIN_TOKEN = "main-api-token-" + "z" * 20
CEILING = 4


async def answer(slots: SendSlots, ok: bool) -> None:
    async with slots.slot():
        if not ok:
            raise TransientDeliveryError("503")


async def run_window(slots: SendSlots, ok: bool) -> None:
    for _ in range(max(slots.allowed(), MIN_WINDOW)):
        try:
            await answer(slots, ok)
        except TransientDeliveryError:
            pass


async def test_failing_windows_halve_the_limit_down_to_one_and_successes_grow_it_back() -> None:
    slots = SendSlots(32)
    assert slots.allowed() == 32
    seen = [slots.allowed()]
    for _ in range(8):
        await run_window(slots, ok=False)
        seen.append(slots.allowed())
    assert seen == [32, 16, 8, 4, 2, 1, 1, 1, 1]  # one request keeps probing
    for _ in range(40):
        await run_window(slots, ok=True)
    assert slots.allowed() == 32  # grown back, one per window, and capped at the ceiling


async def test_a_few_random_failures_keep_the_whole_ceiling() -> None:
    slots = SendSlots(16)
    for round_ in range(50):
        for i in range(16):
            try:
                await answer(slots, ok=(round_ * 16 + i) % 5 != 0)  # one in five fails
            except TransientDeliveryError:
                pass
    assert slots.allowed() == 16


async def test_never_more_in_flight_than_allowed_and_a_sleeping_retry_holds_no_slot() -> None:
    slots = SendSlots(3)
    gate = asyncio.Event()
    backing_off = asyncio.Event()

    async def request() -> None:
        async with slots.slot():
            await gate.wait()

    async def failing_then_sleeping() -> None:
        try:
            async with slots.slot():
                raise TransientDeliveryError("503")
        except TransientDeliveryError:
            backing_off.set()
            await asyncio.sleep(3600)  # the backoff sleep: outside the slot

    sleeper = asyncio.create_task(failing_then_sleeping())
    await backing_off.wait()
    requests = [asyncio.create_task(request()) for _ in range(10)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert slots.in_flight == 3  # all three slots in use by requests, none by the sleeper
    gate.set()
    await asyncio.gather(*requests)
    assert slots.max_in_flight == 3 and slots.in_flight == 0
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper


async def test_a_waiter_cancelled_gives_nothing_away() -> None:
    slots = SendSlots(1)
    gate = asyncio.Event()

    async def holder() -> None:
        async with slots.slot():
            await gate.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    await held
    assert slots.in_flight == 0
    await answer(slots, ok=True)  # the slot is still there to take


class CountingMainAPI(FakeMainAPI):
    """The fake main API, counting every request while it is at the server (faulted ones too);
    each takes a few milliseconds, so the drain's requests overlap."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.on_wire = 0
        self.peak = 0

    async def _put_status(self, request: web.Request) -> web.StreamResponse:
        self.on_wire += 1
        self.peak = max(self.peak, self.on_wire)
        try:
            await asyncio.sleep(0.003)
            return await super()._put_status(request)
        finally:
            self.on_wire -= 1


@pytest.fixture
async def api() -> AsyncIterator[CountingMainAPI]:
    fake = CountingMainAPI(MAIN_TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


async def test_twenty_percent_5xx_never_more_than_the_ceiling_in_flight_all_once_in_order(
    make_settings: Callable[..., Settings], api: CountingMainAPI
) -> None:
    settings = make_settings(
        main_api_url=api.url,
        main_api_token=MAIN_TOKEN,
        sync_concurrency=CEILING,
        sync_timeout=10.0,  # a loaded machine must not turn a slow answer into a re-send
        sync_attempts=12,  # 0.2^12: every row gets through in this one run
        sync_budget=120.0,
    )
    engine = create_engine(settings.database_url, pool_size=10)
    try:
        ledger = Ledger(engine=engine)
        ids = [f"dep-{i:02d}" for i in range(40)]
        await register_fleet(ledger, ids)
        produced = await produce(ledger, ids, parallel=8)  # 5 transitions each
        api.faults = Faults(error_ratio=0.2)
        report = await drain(engine, settings)
    finally:
        await engine.dispose()
    assert report.delivered == 200 and report.dead == report.deferred == 0
    assert api.faulted["error"] > 0  # the faults did happen
    assert api.peak <= CEILING  # measured at the server
    assert api.violations == []  # per-workload order, never one key twice at once
    assert {wid: api.accepted[wid] for wid in ids} == produced
    assert api.duplicates() == {}  # exactly once: no answer was lost, so nothing re-sent


async def test_a_peer_is_failing_from_a_failing_window_until_the_limit_grows_back() -> None:
    slots = SendSlots(4)
    assert not slots.failing
    await run_window(slots, ok=False)
    assert slots.failing and slots.allowed() == 2
    await run_window(slots, ok=True)
    assert slots.failing and slots.allowed() == 3  # growing back, one per window
    await run_window(slots, ok=True)
    assert not slots.failing and slots.allowed() == 4


async def test_a_single_slot_cannot_halve_but_knows_its_peer_is_failing() -> None:
    slots = SendSlots(1)
    await run_window(slots, ok=False)
    assert slots.failing and slots.allowed() == 1  # so a row's retries double
    await run_window(slots, ok=True)
    assert not slots.failing


UNLUCKY_FAILS = 5  # at 20% 5xx, one row in ~3,000 fails five times in a row


class UnluckyRowAPI(CountingMainAPI):
    """Answers 503 to one workload's first UNLUCKY_FAILS requests; every other request succeeds
    after 20 ms, so healthy answers keep coming while the unlucky row retries."""

    def __init__(self, token: str, unlucky: str) -> None:
        super().__init__(token)
        self.unlucky = unlucky
        self.unlucky_requests = 0

    async def _put_status(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["workload_id"] == self.unlucky:
            self.unlucky_requests += 1
            if self.unlucky_requests <= UNLUCKY_FAILS:
                return web.json_response({"error": "unavailable"}, status=503)
        await asyncio.sleep(0.02)
        return await super()._put_status(request)


async def test_an_unlucky_row_at_a_healthy_peer_retries_without_doubling_its_sleeps(
    make_settings: Callable[..., Settings],
) -> None:
    """The peer answers nearly every request, so its send slots stay at the ceiling and the row
    that failed five times in a row is bad luck: each retry sleeps the first, short backoff
    (at most backoff_cap(1)), and all five fit in a budget that doubling sleeps (0.1 + 0.2 + 0.4
    + 0.8 s before the fifth retry, whose own sleep is 1.6 s) would cross, deferring the row."""
    ids = [f"dep-{i:02d}" for i in range(40)]
    api = UnluckyRowAPI(MAIN_TOKEN, unlucky=ids[0])
    await api.start()
    settings = make_settings(
        main_api_url=api.url,
        main_api_token=MAIN_TOKEN,
        sync_concurrency=CEILING,
        sync_timeout=10.0,
        sync_attempts=UNLUCKY_FAILS + 1,
        sync_budget=UNLUCKY_FAILS * backoff_cap(1) + 1.5,  # 2.5 s: short sleeps and slack
    )
    assert sum(backoff_cap(r) - RETRY_JITTER for r in range(1, UNLUCKY_FAILS + 1)) > (
        settings.sync_budget
    )  # doubling sleeps alone would cross it
    engine = create_engine(settings.database_url, pool_size=10)
    try:
        ledger = Ledger(engine=engine)
        await register_fleet(ledger, ids)
        produced = await produce(ledger, ids, parallel=8)
        report = await drain(engine, settings)
    finally:
        await engine.dispose()
        await api.stop()
    assert api.unlucky_requests == UNLUCKY_FAILS + len(produced[ids[0]])
    assert report.deferred == 0 and report.delivered == 200
    assert {wid: api.accepted[wid] for wid in ids} == produced
    assert api.violations == [] and api.duplicates() == {}
