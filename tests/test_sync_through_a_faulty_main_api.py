"""1,000 transitions over 200 workloads through a main API that fails 30% of requests with 5xx,
times some out, resets connections and loses some acks: all arrive, per workload in order.
Real `statusd worker` processes and beat, real aiohttp main API on loopback, both databases."""

from __future__ import annotations

import time
from collections.abc import Callable

from statusd.settings import Settings
from tests.support.main_api import FakeMainAPI, Faults
from tests.support.sync_worker import Workers, outbox_counts, produce, register_fleet, wait_outbox

pytest_plugins = ("tests.support.sync_fixtures",)


async def test_thousand_transitions_through_faults_all_arrive_in_order(
    main_api: FakeMainAPI,
    e2e_settings: Callable[..., Settings],
    runtime_for: Callable,
    workers: Workers,
) -> None:
    settings = e2e_settings()
    main_api.faults = Faults(
        error_ratio=0.30,
        timeout_ratio=0.02,
        timeout_sleep=1.5,  # > sync_timeout (1 s)
        reset_ratio=0.03,
        ack_lost_ratio=0.02,
        process_delay=0.002,
    )
    await main_api.start()
    rt = await runtime_for(settings)
    workers.worker(settings, concurrency=2)
    workers.beat(settings)
    ids = [f"dep-{i:03d}" for i in range(200)]
    await register_fleet(rt.ledger, ids)

    started = time.monotonic()
    produced = await produce(rt.ledger, ids, parallel=16)  # 5 transitions each, interleaved
    produced_s = time.monotonic() - started
    await wait_outbox(rt.ledger, 240, procs=workers.procs, what="1,000 rows synced")
    synced_s = time.monotonic() - started

    assert sum(len(v) for v in produced.values()) == 1000
    assert main_api.violations == []  # order per workload, no concurrent sends of one key
    assert {wid: main_api.accepted[wid] for wid in ids} == produced
    # Re-sends happen (lost acks, timeouts that were processed): always the same key and body.
    for key in main_api.duplicates():
        bodies = {str(sorted(r.body.items())) for r in main_api.received if r.key == key}
        assert len(bodies) == 1
    assert main_api.faulted["error"] > 100 and main_api.faulted["reset"] > 0
    assert (await outbox_counts(rt.ledger))["synced"] == 1000
    print(
        f"\n[bench] {settings.database_url.split(':')[0]}: 1000 transitions produced in {produced_s:.1f}s, "
        f"all synced after {synced_s:.1f}s ({1000 / synced_s:.0f}/s) through {main_api.requests} requests, "
        f"faults {dict(main_api.faulted)}, duplicates {len(main_api.duplicates())}"
    )
