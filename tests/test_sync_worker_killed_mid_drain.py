"""A sync worker SIGKILLed mid-drain (requests in flight, rows leased): nothing is lost; the
leases expire, another worker re-sends with the same Idempotency-Key, so the only duplicates
are idempotent re-sends of one key. Real worker processes, both databases."""

from __future__ import annotations

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


async def test_sigkill_mid_drain_loses_nothing_and_resends_only_same_keys(
    main_api: FakeMainAPI,
    e2e_settings: Callable[..., Settings],
    runtime_for: Callable,
    workers: Workers,
) -> None:
    settings = e2e_settings()
    main_api.faults.process_delay = 0.4  # slow main API: many requests in flight at the kill
    await main_api.start()
    rt = await runtime_for(settings)
    ids = [f"dep-{i:02d}" for i in range(60)]
    await register_fleet(rt.ledger, ids)
    produced = await produce(rt.ledger, ids, parallel=16)  # 300 rows waiting

    doomed = workers.worker(settings, concurrency=2)
    await main_api.wait_until(
        lambda: main_api.total_accepted() >= 40 and len(main_api.in_flight) >= 4,
        60,
        "a drain well under way",
    )
    doomed.kill_tree()  # SIGKILL the whole worker (main process and its pool children)
    leased = [r for r in await outbox_rows(rt.ledger) if r["lease_owner"] is not None]
    assert leased, "the kill should leave rows leased to the dead worker"
    assert (await outbox_counts(rt.ledger))["pending"] > 0

    main_api.faults.process_delay = 0.0
    workers.worker(settings, concurrency=2)
    workers.beat(settings)  # drain_due picks the leased rows up once their lease expires
    await wait_outbox(rt.ledger, 60, procs=workers.procs, what="drained after the kill")

    assert main_api.violations == []
    assert {wid: main_api.accepted[wid] for wid in ids} == produced  # nothing lost, in order
    for key, count in main_api.duplicates().items():  # re-sends only, same key, same body
        bodies = {str(sorted(r.body.items())) for r in main_api.received if r.key == key}
        assert len(bodies) == 1 and count >= 2
    assert (await outbox_counts(rt.ledger))["synced"] == 300
    print(
        f"\n[kill] leased at kill: {len(leased)}, duplicates (idempotent re-sends): {len(main_api.duplicates())}"
    )
