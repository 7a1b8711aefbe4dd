"""Two sync worker processes on PostgreSQL (each with two pool processes, each draining 16 rows at
a time) against a slow main API: no row is ever sent while a send of it is in flight (the fake
main API tracks in-flight Idempotency-Keys), order per workload holds, every row is sent once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from statusd.settings import Settings
from tests.support.main_api import FakeMainAPI
from tests.support.sync_worker import (
    E2E_SYNC,
    Workers,
    outbox_counts,
    produce,
    register_fleet,
    wait_outbox,
)

pytest_plugins = ("tests.support.sync_fixtures",)


@pytest.fixture
def database_url(
    request: pytest.FixtureRequest,
) -> str:  # PostgreSQL only: SKIP LOCKED is the point
    template = request.getfixturevalue("postgres_template")
    url: str = template.new_database()
    request.addfinalizer(lambda: template.release(url))
    return url


async def test_two_workers_never_send_one_row_concurrently_and_keep_order(
    main_api: FakeMainAPI,
    make_settings: Callable[..., Settings],
    broker_url: str,
    runtime_for: Callable,
    workers: Workers,
) -> None:
    # A timeout no stall of this loaded test process reaches: a request the client gave up on
    # while the peer still processed it is re-sent by design (same Idempotency-Key), and would
    # show here as a duplicate or a key in flight twice, which is not what this test is about
    # (test_sync_through_a_faulty_main_api covers timeouts). What is left is the lease.
    settings = make_settings(
        main_api_url=main_api.url, broker_url=broker_url, **{**E2E_SYNC, "sync_timeout": 5.0}
    )
    assert not settings.is_sqlite
    main_api.faults.process_delay = 0.05  # slow enough that both workers have sends in flight
    main_api.faults.error_ratio = 0.1  # and some retries, so rows go back and forth
    await main_api.start()
    rt = await runtime_for(settings)
    ids = [f"dep-{i:03d}" for i in range(100)]
    await register_fleet(rt.ledger, ids)
    first, second = workers.worker(settings), workers.worker(settings)
    workers.beat(settings)
    produced = await produce(rt.ledger, ids, parallel=16)  # 500 rows, drained while produced
    await wait_outbox(rt.ledger, 120, procs=workers.procs, what="500 rows synced by two workers")

    assert main_api.violations == []  # no key while in flight, no older after newer
    assert {wid: main_api.accepted[wid] for wid in ids} == produced
    assert main_api.duplicates() == {}  # nothing faulted after processing: every row sent once
    assert main_api.max_in_flight > 1
    assert (await outbox_counts(rt.ledger))["synced"] == 500
    assert first.returncode is None and second.returncode is None
    for worker in (first, second):  # both took part (kicks and beat runs spread over them)
        assert "statusd.sync.drain" in worker.log_tail(10**7)
