"""The drain itself (in-process, real aiohttp main API, both databases): order, contract, outcomes.

The end-to-end proofs with Celery workers are in test_sync_end_to_end_*.py; here each rule of the
drain is shown on its own: what is sent, when a row is synced, dead, deferred, or left alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from sqlalchemy import update

from statusd.db import create_engine, transaction
from statusd.lifecycle import State
from statusd.models import OutboxEntry, OutboxStatus, utcnow
from statusd.settings import Settings
from statusd.sync.drain import drain
from statusd.sync.lease import RETRY_INITIAL_WAIT
from statusd.sync.outbox_dead_letters import retry_dead
from statusd.sync.status import outbox_stats, workload_synced
from statusd.transitions import Ledger
from tests.support.main_api import FakeMainAPI
from tests.support.sync_worker import outbox_rows, produce, register_fleet, walk

MAIN_TOKEN = "main-api-token-" + "z" * 20
_O = OutboxEntry.__table__  # type: ignore[attr-defined]


@pytest.fixture
async def api() -> AsyncIterator[FakeMainAPI]:
    fake = FakeMainAPI(MAIN_TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def sync_settings(make_settings: Callable[..., Settings], api: FakeMainAPI) -> Settings:
    return make_settings(
        main_api_url=api.url,
        main_api_token=MAIN_TOKEN,
        sync_timeout=0.5,
        sync_budget=1.0,
        sync_attempts=3,
        sync_backoff_max=0.2,
        sync_concurrency=8,
    )


@pytest.fixture
async def ledger(sync_settings: Settings) -> AsyncIterator[Ledger]:
    engine = create_engine(sync_settings.database_url, pool_size=10)
    yield Ledger(engine=engine)
    await engine.dispose()


async def test_every_transition_is_sent_once_in_order_with_the_contract(
    ledger: Ledger, api: FakeMainAPI, sync_settings: Settings
) -> None:
    ids = [f"dep-{i}" for i in range(12)]
    await register_fleet(ledger, ids)
    produced = await produce(ledger, ids, parallel=4)
    # One drain must deliver all 60: a loaded machine may not starve the in-process main API past
    # the fixture's 0.5 s timeout (retries after timeouts are the faulty-main-API tests' subject).
    patient = sync_settings.model_copy(update={"sync_timeout": 10.0, "sync_budget": 60.0})
    report = await drain(ledger.engine, patient)
    assert report.delivered == 60 and report.dead == report.deferred == 0
    assert api.violations == []
    assert {wid: api.accepted[wid] for wid in ids} == produced
    assert api.duplicates() == {}
    first = next(r for r in api.received if r.workload_id == "dep-0")
    assert first.body["state"] == "DEPLOYING" and first.body["previous"] == "PENDING"
    assert first.body["source"] == "push" and first.key == str(first.body["transition_id"])
    assert all(r["status"] == OutboxStatus.SYNCED for r in await outbox_rows(ledger))
    assert await workload_synced(ledger.engine, "dep-0")
    stats = await outbox_stats(ledger.engine, sync_settings)
    assert stats["depth"] == 0 and stats["dead_letters"] == 0 and stats["sync"] == "enabled"


async def test_409_means_the_main_db_already_holds_it(
    ledger: Ledger, api: FakeMainAPI, sync_settings: Settings
) -> None:
    await register_fleet(ledger, ["d"])
    await walk(ledger, "d", [State.DEPLOYING, State.READY])
    api.accepted["d"] = [10**9]  # the main DB already holds something newer than both
    report = await drain(ledger.engine, sync_settings)
    assert report.delivered == 2
    rows = await outbox_rows(ledger, workload_id="d")
    assert [(r["status"], r["response_status"]) for r in rows] == [(OutboxStatus.SYNCED, 409)] * 2
    api.violations.clear()  # the fake flags older-than-held on purpose; here it was staged


async def test_permanent_4xx_is_dead_lettered_without_blocking_the_next_and_replays(
    ledger: Ledger, api: FakeMainAPI, sync_settings: Settings
) -> None:
    await register_fleet(ledger, ["bad", "good"])
    api.faults.reject = {"bad": 422}
    await walk(ledger, "bad", [State.DEPLOYING, State.READY, State.DEGRADED])
    await walk(ledger, "good", [State.DEPLOYING])
    report = await drain(ledger.engine, sync_settings)
    assert (report.delivered, report.dead, report.deferred) == (1, 3, 0)
    dead = await outbox_rows(ledger, workload_id="bad")
    assert [r["status"] for r in dead] == [OutboxStatus.DEAD] * 3
    assert dead[0]["response_status"] == 422 and "refused" in dead[0]["response_body"]
    assert dead[0]["attempts"] == 1  # permanent: never retried
    assert not await workload_synced(ledger.engine, "bad")
    assert await workload_synced(ledger.engine, "good")
    stats = await outbox_stats(ledger.engine)
    assert stats["dead_letters"] == 3 and stats["targets"]["main"]["dead"] == 3
    # The count uses the same rule as workload_synced: "bad" (newest dead) is unsynced.
    assert stats["workloads_unsynced"] == 1

    api.faults.reject = {}
    assert await retry_dead(ledger.engine, workload_id="bad") == 3
    report = await drain(ledger.engine, sync_settings)
    assert report.delivered == 3
    assert len(api.accepted["bad"]) == 3 and api.violations == []
    assert await workload_synced(ledger.engine, "bad")


async def test_a_401_is_permanent_too(
    ledger: Ledger, api: FakeMainAPI, make_settings: Callable[..., Settings]
) -> None:
    wrong = make_settings(main_api_url=api.url, main_api_token="not-the-token-" + "q" * 20)
    await register_fleet(ledger, ["d"])
    await walk(ledger, "d", [State.DEPLOYING])
    report = await drain(ledger.engine, wrong)
    assert report.dead == 1
    assert (await outbox_rows(ledger))[0]["response_status"] == 401


async def test_transient_failures_are_retried_then_deferred_with_attempts_and_next_time(
    ledger: Ledger, api: FakeMainAPI, sync_settings: Settings
) -> None:
    await register_fleet(ledger, ["d"])
    await walk(ledger, "d", [State.DEPLOYING, State.READY])
    api.faults.error_ratio = 1.0
    # A backoff no loaded machine outruns between the two drains below (it is skipped by hand).
    sync_settings = sync_settings.model_copy(update={"sync_backoff_max": 30.0})
    report = await drain(ledger.engine, sync_settings)
    assert report.deferred == 1 and report.delivered == 0  # only the oldest row was eligible
    first, second = await outbox_rows(ledger, workload_id="d")
    assert first["status"] == OutboxStatus.PENDING and first["attempts"] == 3
    assert first["last_error"] == "main API answered 503" and first["response_status"] == 503
    assert first["next_attempt_at"] > utcnow() - timedelta(seconds=1)
    assert first["lease_owner"] is None and second["attempts"] == 0
    assert (await drain(ledger.engine, sync_settings)).claimed == 0  # not due yet: left alone

    api.faults.error_ratio = 0.0
    async with transaction(ledger.engine) as conn:  # a later run, after the backoff
        await conn.execute(update(_O).values(next_attempt_at=utcnow()))
    report = await drain(ledger.engine, sync_settings)
    assert report.delivered == 2 and api.accepted["d"] == [
        first["transition_id"],
        second["transition_id"],
    ]


async def test_no_retry_starts_whose_sleep_would_cross_the_budget(
    ledger: Ledger, api: FakeMainAPI, sync_settings: Settings
) -> None:
    await register_fleet(ledger, ["d"])
    await walk(ledger, "d", [State.DEPLOYING])
    api.faults.error_ratio = 1.0
    # Attempts to spare, but a budget shorter than the first retry's sleep (RETRY_INITIAL_WAIT):
    # the row is tried once and deferred, on any machine.
    tight = sync_settings.model_copy(
        update={"sync_attempts": 100, "sync_budget": RETRY_INITIAL_WAIT / 2}
    )
    report = await drain(ledger.engine, tight)
    assert report.deferred == 1 and api.requests == 1
    (row,) = await outbox_rows(ledger, workload_id="d")
    assert row["attempts"] == 1 and row["last_error"] == "main API answered 503"


async def test_connection_refused_is_transient(
    ledger: Ledger, api: FakeMainAPI, sync_settings: Settings
) -> None:
    await register_fleet(ledger, ["d"])
    await walk(ledger, "d", [State.DEPLOYING])
    await api.stop()
    report = await drain(ledger.engine, sync_settings)
    assert report.deferred == 1
    row = (await outbox_rows(ledger))[0]
    assert row["status"] == OutboxStatus.PENDING and "Connect" in row["last_error"]


async def test_unset_url_disables_sync_and_discards_nothing(
    ledger: Ledger, api: FakeMainAPI, make_settings: Callable[..., Settings]
) -> None:
    disabled = make_settings()
    await register_fleet(ledger, ["d"])
    await walk(ledger, "d", [State.DEPLOYING, State.READY])
    report = await drain(ledger.engine, disabled)
    assert report.claimed == 0 and api.requests == 0
    assert [r["status"] for r in await outbox_rows(ledger)] == [OutboxStatus.PENDING] * 2
    stats = await outbox_stats(ledger.engine, disabled)
    assert stats["sync"] == "disabled" and stats["depth"] == 2 and stats["workloads_unsynced"] == 1
    assert not await workload_synced(ledger.engine, "d")


async def test_a_live_lease_is_respected_and_an_expired_one_is_reclaimed(
    ledger: Ledger, api: FakeMainAPI, sync_settings: Settings
) -> None:
    await register_fleet(ledger, ["d"])
    await walk(ledger, "d", [State.DEPLOYING, State.READY])
    async with transaction(ledger.engine) as conn:  # another worker holds the oldest row
        await conn.execute(
            update(_O)
            .where(_O.c.id == (await outbox_rows(ledger))[0]["id"])
            .values(lease_owner="other", lease_until=utcnow() + timedelta(minutes=5))
        )
    report = await drain(ledger.engine, sync_settings)
    assert report.claimed == 0 and api.requests == 0  # and its successor waits behind it
    async with transaction(ledger.engine) as conn:  # that worker died: its lease expires
        await conn.execute(update(_O).values(lease_until=utcnow() - timedelta(seconds=1)))
    report = await drain(ledger.engine, sync_settings)
    assert report.delivered == 2 and len(api.accepted["d"]) == 2
