"""Main API down (connection refused) for a while, then back: every transition arrives, per
workload in order, none twice. Real Celery sync worker + beat, real aiohttp main API, both DBs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from statusd.settings import Settings
from tests.support.main_api import FakeMainAPI
from tests.support.sync_worker import (
    Workers,
    outbox_counts,
    outbox_rows,
    produce,
    register_fleet,
    wait_outbox,
)

pytest_plugins = ("tests.support.sync_fixtures",)


async def test_outage_then_recovery_delivers_everything_in_order_once(
    main_api: FakeMainAPI,
    e2e_settings: Callable[..., Settings],
    runtime_for: Callable,
    workers: Workers,
) -> None:
    settings = e2e_settings()
    rt = await runtime_for(settings)
    workers.worker(settings)
    workers.beat(settings)
    ids = [f"dep-{i:03d}" for i in range(40)]
    await register_fleet(rt.ledger, ids)

    produced = await produce(rt.ledger, ids)  # 200 transitions while nothing listens on the URL
    deadline = asyncio.get_running_loop().time() + 60
    while True:  # the workers tried, failed (refused), and recorded attempts + a next time
        rows = await outbox_rows(rt.ledger)
        if sum(1 for r in rows if r["attempts"] > 0) >= len(ids):
            break
        assert asyncio.get_running_loop().time() < deadline, "workers never tried the main API"
        await asyncio.sleep(0.2)
    assert all(r["status"] == "pending" for r in rows)
    assert any("Connect" in (r["last_error"] or "") for r in rows)
    assert main_api.requests == 0

    await asyncio.sleep(2)  # down "for a while": several beat runs give up again
    await main_api.start()
    await wait_outbox(rt.ledger, 90, procs=workers.procs)

    assert main_api.violations == []
    assert {wid: main_api.accepted[wid] for wid in ids} == produced
    assert main_api.duplicates() == {}  # refused connections never reached it: nothing twice
    assert main_api.total_accepted() == 200
    assert (await outbox_counts(rt.ledger))["synced"] == 200


async def test_a_new_transition_is_drained_promptly_without_beat(
    main_api: FakeMainAPI,
    e2e_settings: Callable[..., Settings],
    runtime_for: Callable,
    workers: Workers,
) -> None:
    """The post-commit kick alone (no beat running) gets transitions to the main API."""
    settings = e2e_settings()
    rt = await runtime_for(settings)
    await main_api.start()
    workers.worker(settings)
    ids = [f"nb-{i}" for i in range(5)]
    await register_fleet(rt.ledger, ids)
    produced = await produce(rt.ledger, ids, pause=0.3)  # spread over several debounce windows
    await main_api.wait_until(
        lambda: main_api.total_accepted() == 25, 60, "25 transitions synced by kicks"
    )
    assert {wid: main_api.accepted[wid] for wid in ids} == produced and main_api.violations == []
