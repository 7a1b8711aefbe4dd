"""Retention on real SQLite and PostgreSQL: a prune removes what is out of policy and nothing
else, in bounded batches; a dry run counts the same rows and deletes none; availability reports
give the same figures before and after; an id whose row was pruned comes back with a higher
generation; the beat task and `POST /v1/prune` run the same pass, counted in
statusd_pruned_rows_total."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd import maintenance
from statusd.availability.breakdown import availability, report_json
from statusd.availability.timeline import Span
from statusd.celery.application import beat_schedule, create_celery
from statusd.celery.names import RETENTION_TASK
from statusd.db import create_engine, reading, transaction
from statusd.lifecycle import Kind, Source, State
from statusd.maintenance import Recurrence
from statusd.models import (
    AvailabilityDay,
    OutboxEntry,
    OutboxStatus,
    OutboxTarget,
    RefusedObservation,
    TransitionRow,
    WorkloadRow,
)
from statusd.outbox_writer import transition_key
from statusd.registry import deregister, register
from statusd.retention import PrunedTable, prune
from statusd.settings import Settings
from statusd.silences import Matcher
from tests.support.api_client import api_client
from tests.support.task_runtime import task_runtime

_W = WorkloadRow.__table__  # type: ignore[attr-defined]
_T = TransitionRow.__table__  # type: ignore[attr-defined]
_R = RefusedObservation.__table__  # type: ignore[attr-defined]
_O = OutboxEntry.__table__  # type: ignore[attr-defined]
_D = AvailabilityDay.__table__  # type: ignore[attr-defined]

MIDNIGHT = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
BATCH = 3


def days_ago(days: float, hours: float = 0) -> datetime:
    return MIDNIGHT - timedelta(days=days) + timedelta(hours=hours)


POLICY = {
    "retain_history_days": 30,
    "retain_outbox_days": 7,
    "retain_refused_per_workload": 5,
    "retain_batch": BATCH,
}


async def story(
    engine: AsyncEngine,
    wid: str,
    kind: Kind,
    created: datetime,
    moves: Sequence[tuple[datetime, State]],
    *,
    refused_at: Sequence[datetime] = (),
    deleted: datetime | None = None,
) -> None:
    """What the writer would have left: the (re-)registration, its transitions and refusals at
    the given times, and the workload row's state, all backdated."""
    row = await register(engine, wid, kind, labels={"team": "vision"})
    generation = int(row["generation"])
    async with transaction(engine) as conn:
        state = State.PENDING
        for when, target in moves:
            await conn.execute(
                insert(_T).values(
                    workload_id=wid,
                    generation=generation,
                    kind=kind,
                    from_state=state,
                    to_state=target,
                    source=Source.PUSH,
                    observed_at=when,
                    recorded_at=when,
                )
            )
            state = target
        for when in refused_at:
            await conn.execute(
                insert(_R).values(
                    workload_id=wid,
                    current_state=state,
                    requested_state="PENDING",
                    source=Source.PUSH,
                    rule="never backward",
                    observed_at=when,
                    recorded_at=when,
                )
            )
        await conn.execute(
            update(_W)
            .where(_W.c.id == wid)
            .values(
                created_at=created,
                state=state,
                state_changed_at=moves[-1][0] if moves else created,
                deleted_at=deleted,
            )
        )


async def outbox_row(engine: AsyncEngine, status: OutboxStatus, created: datetime, n: int) -> None:
    async with transaction(engine) as conn:
        await conn.execute(
            insert(_O).values(
                event_key=transition_key(n),
                transition_id=n,
                workload_id="live-noisy",
                target=OutboxTarget.MAIN,
                destination="",
                payload={},
                status=status,
                next_attempt_at=created,
                created_at=created,
                synced_at=created if status is OutboxStatus.SYNCED else None,
            )
        )


async def seed(engine: AsyncEngine) -> None:
    # Final 50 days ago: its history goes, the row (still registered) stays.
    await story(
        engine,
        "done-old",
        Kind.TRAINING,
        days_ago(60),
        [(days_ago(60, 1), State.RUNNING), (days_ago(50), State.SUCCEEDED)],
        refused_at=[days_ago(55), days_ago(54), days_ago(53), days_ago(49)],
    )
    # Third registration, deregistered 40 days ago: history and row go; generation 3 is marked.
    for _ in range(2):
        await register(engine, "gone-old", Kind.DEPLOYMENT)
        await deregister(engine, "gone-old")
    await story(
        engine,
        "gone-old",
        Kind.DEPLOYMENT,
        days_ago(80),
        [
            (days_ago(80, 1), State.READY),
            (days_ago(70), State.UNREACHABLE),
            (days_ago(70, 2), State.READY),
            (days_ago(65), State.DEGRADED),
            (days_ago(64), State.READY),
        ],
        refused_at=[days_ago(60)],
        deleted=days_ago(40),
    )
    # Final 10 days ago: within policy, untouched.
    await story(
        engine,
        "done-recent",
        Kind.TRAINING,
        days_ago(20),
        [(days_ago(20, 1), State.RUNNING), (days_ago(10), State.FAILED)],
        refused_at=[days_ago(9), days_ago(8), days_ago(7)],
    )
    # Live, with 12 refusals: the newest 5 stay.
    await story(
        engine,
        "live-noisy",
        Kind.DEPLOYMENT,
        days_ago(45),
        [
            (days_ago(45, 1), State.READY),
            (days_ago(44), State.UNREACHABLE),
            (days_ago(44, 3), State.READY),
        ],
        refused_at=[days_ago(40 - i) for i in range(12)],
    )
    # Registered again 40 days ago: the first registration's history goes, the second's stays.
    await story(
        engine,
        "again",
        Kind.DEPLOYMENT,
        days_ago(60),
        [(days_ago(60, 2), State.READY), (days_ago(50), State.LOST)],
        refused_at=[days_ago(55)],
        deleted=days_ago(45),
    )
    await story(
        engine,
        "again",
        Kind.DEPLOYMENT,
        days_ago(40),
        [
            (days_ago(40, 1), State.READY),
            (days_ago(20), State.UNREACHABLE),
            (days_ago(20, 4), State.READY),
        ],
        refused_at=[days_ago(15)],
    )
    for n, (status, age) in enumerate(
        [
            (OutboxStatus.SYNCED, 10),  # delivered, old: goes
            (OutboxStatus.SYNCED, 1),
            (OutboxStatus.DEAD, 10),  # a dead letter as old: goes
            (OutboxStatus.DEAD, 1),
            (OutboxStatus.PENDING, 30),  # never delivered: kept whatever its age
        ]
    ):
        await outbox_row(engine, status, days_ago(age), n)


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    async with reading(engine) as conn:
        return {
            "transitions": {
                (r.workload_id, r.generation, r.id)
                for r in await conn.execute(select(_T.c.workload_id, _T.c.generation, _T.c.id))
            },
            "refused": {(r.workload_id, r.id) for r in await conn.execute(select(_R))},
            "outbox": {(r.status, r.created_at) for r in await conn.execute(select(_O))},
            "workloads": {r.id: int(r.generation) for r in await conn.execute(select(_W))},
        }


WINDOWS = [(90, 0), (60, 40), (46, 44)]  # whole UTC days, back from today's midnight


async def figures(engine: AsyncEngine) -> list[dict[str, object]]:
    out = []
    for start, end in WINDOWS:
        window = Span(days_ago(start).timestamp(), days_ago(end).timestamp())
        for group_by in (None, "kind"):
            result = await availability(engine, None, None, window, group_by=group_by)
            out.append(report_json(result))
    return out


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


async def test_prune_keeps_what_is_within_policy_and_the_figures(
    engine: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(**POLICY)
    await seed(engine)
    # gone-old had planned maintenance every day (in a non-UTC zone): its rollup must leave out
    # the same seconds the live history did.
    await maintenance.create(
        engine,
        Matcher(workload_id="gone-old"),
        "nightly",
        recurrence=Recurrence("0 3 * * *", 7200, "America/New_York"),
        created_at=days_ago(400),
    )
    before = await snapshot(engine)
    figures_before = await figures(engine)
    gone = [w for f in figures_before for w in f["workloads"] if w["id"] == "gone-old"]  # type: ignore[attr-defined]
    assert gone and all(w["maintenance_s"] > 0 for w in gone)
    # Sanity: the figures are not empty (gone-old was up 79 days minus an UNREACHABLE spell).
    assert any(w["id"] == "gone-old" for w in figures_before[0]["workloads"])  # type: ignore[attr-defined]

    dry = await prune(engine, settings, dry_run=True)
    assert await snapshot(engine) == before  # a dry run deletes nothing

    report = await prune(engine, settings)
    after = await snapshot(engine)
    expected_rows = {
        PrunedTable.TRANSITIONS: 2 + 5 + 2,  # done-old, gone-old, again's first registration
        PrunedTable.REFUSED: 4 + 1 + 1 + 7,  # done-old, gone-old, again's first, live-noisy's 7
        PrunedTable.OUTBOX: 2,
        PrunedTable.AUDIT: 0,
        PrunedTable.WORKLOADS: 1,
    }
    assert {t: report.rows.get(t, 0) for t in PrunedTable} == expected_rows
    assert {t: dry.rows.get(t, 0) for t in PrunedTable} == expected_rows
    # Bounded: no delete statement took more than the batch.
    for table, rows in report.rows.items():
        assert rows <= BATCH * report.batches[table], table
    assert report.batches[PrunedTable.REFUSED] >= math.ceil(7 / BATCH)

    # Exactly the out-of-policy rows are gone; everything else is untouched.
    kept_transitions = {x for x in before["transitions"] if x[0] in ("done-recent", "live-noisy")}
    kept_transitions |= {x for x in before["transitions"] if x[0] == "again" and x[1] == 2}
    assert after["transitions"] == kept_transitions
    newest_noisy = sorted(i for w, i in before["refused"] if w == "live-noisy")[-5:]
    assert after["refused"] == {
        x
        for x in before["refused"]
        if x[0] == "done-recent"
        or x[0] == "again"
        and x[1] == max(i for w, i in before["refused"] if w == "again")
    } | {("live-noisy", i) for i in newest_noisy}
    assert len(after["outbox"]) == 3 and all(
        status == OutboxStatus.PENDING or created > days_ago(7)
        for status, created in after["outbox"]
    )
    assert after["workloads"] == {k: v for k, v in before["workloads"].items() if k != "gone-old"}

    # The rollup holds the pruned registrations, and the reports did not move.
    async with reading(engine) as conn:
        rolled = {
            (r.workload_id, int(r.generation))
            for r in await conn.execute(select(_D.c.workload_id, _D.c.generation).distinct())
        }
    assert rolled == {("done-old", 1), ("gone-old", 3), ("again", 1)}
    assert await figures(engine) == figures_before

    # A second prune finds nothing; the figures still hold.
    again = await prune(engine, settings)
    assert sum(again.rows.values()) == 0 and again.rollup_days == 0
    assert await figures(engine) == figures_before

    # The pruned id comes back above every generation it had.
    row = await register(engine, "gone-old", Kind.DEPLOYMENT)
    assert int(row["generation"]) == 4
    # A brand-new id also starts above the mark (harmless: generations only need to grow).
    assert int((await register(engine, "new-one", Kind.TRAINING))["generation"]) == 4


def _pruned_total(metrics_text: str, table: str) -> float:
    match = re.search(
        rf'^statusd_pruned_rows_total\{{table="{table}"\}} (\S+)$', metrics_text, re.MULTILINE
    )
    return float(match.group(1)) if match else 0.0


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(make_settings(**POLICY)) as c:
        yield c


async def test_prune_route_counts_rows_in_metrics(
    client: TestClient[Any, Any], engine: AsyncEngine
) -> None:
    await seed(engine)
    before = await (await client.get("/metrics")).text()
    dry = await client.post("/v1/prune", json={"dry_run": True})
    assert dry.status == 200, await dry.text()
    assert (await dry.json())["tables"]["transitions"]["rows"] == 9
    assert _pruned_total(await (await client.get("/metrics")).text(), "transitions") == (
        _pruned_total(before, "transitions")
    )
    resp = await client.post("/v1/prune", json={})
    body = await resp.json()
    assert resp.status == 200 and body["dry_run"] is False
    assert body["tables"]["transitions"] == {
        "rows": 9,
        "batches": body["tables"]["transitions"]["batches"],
    }
    text = await (await client.get("/metrics")).text()
    for table in ("transitions", "refused_observations", "outbox", "workloads"):
        assert (
            _pruned_total(text, table) - _pruned_total(before, table)
            == body["tables"][table]["rows"]
        )
    bad = await client.post("/v1/prune", json={"dry_run": "yes"})
    assert bad.status == 422 and (await bad.json())["field"] == "dry_run"


def test_beat_task_prunes_and_is_scheduled(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from statusd.celery import retention_tasks  # noqa: F401  (registers the shared task)

    settings = make_settings(**POLICY, retain_interval=1800)
    entry = beat_schedule(settings)["retention-prune"]
    assert entry["task"] == RETENTION_TASK and entry["schedule"] == 1800

    async def seeded() -> None:
        eng = create_engine(settings.database_url)
        try:
            await seed(eng)
        finally:
            await eng.dispose()

    asyncio.run(seeded())
    # Looked up on an app of our own: the shared task's module-level proxy resolves against
    # whichever Celery app is current in this process, possibly one another test built without it.
    app = create_celery(settings)
    with task_runtime(settings, monkeypatch):
        result = app.tasks[RETENTION_TASK]()
    assert (
        result["tables"]["transitions"]["rows"] == 9 and result["tables"]["workloads"]["rows"] == 1
    )
    assert result["rollup_days"] > 0


async def test_counted_rows(engine: AsyncEngine) -> None:
    """The seed itself, as the expectations above assume it."""
    await seed(engine)
    async with reading(engine) as conn:
        n = (await conn.execute(select(func.count()).select_from(_T))).scalar_one()
    assert n == 2 + 5 + 2 + 2 + 3 + 3
