"""apply_observation on real SQLite and PostgreSQL: history, refusals, outbox, concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from statusd.db import create_engine, reading
from statusd.errors import UnknownWorkload
from statusd.lifecycle import Kind, Source, State
from statusd.models import OutboxEntry, RefusedObservation, TransitionRow
from statusd.registry import deregister, register
from statusd.transitions import Ledger, Observation, Outcome, apply_observation

T = TransitionRow.__table__  # type: ignore[attr-defined]


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    engine = create_engine(database_url, pool_size=20)
    yield Ledger(engine=engine)
    await engine.dispose()


async def history(ledger: Ledger, wid: str) -> list[tuple[str, str, int | None]]:
    async with reading(ledger.engine) as conn:
        rows = await conn.execute(
            select(T.c.from_state, T.c.to_state, T.c.seq)
            .where(T.c.workload_id == wid)
            .order_by(T.c.id)
        )
        return [(str(a), str(b), c) for a, b, c in rows]


async def test_training_lifecycle_with_history_refusal_and_outbox(ledger: Ledger) -> None:
    await register(ledger.engine, "t1", Kind.TRAINING)
    push = lambda s, seq: Observation("t1", s, Source.PUSH, seq=seq)  # noqa: E731
    assert (await apply_observation(ledger, push(State.RUNNING, 1))).outcome is Outcome.APPLIED
    assert (await apply_observation(ledger, push(State.RUNNING, 2))).outcome is Outcome.UNCHANGED
    refused = await apply_observation(ledger, push(State.STARTING, 3))
    assert refused.outcome is Outcome.REFUSED and "backward" in refused.rule
    assert (await apply_observation(ledger, push(State.SUCCEEDED, 1))).outcome is Outcome.STALE_SEQ
    assert (await apply_observation(ledger, push(State.SUCCEEDED, 4))).outcome is Outcome.APPLIED
    assert (
        await apply_observation(ledger, Observation("t1", State.STOPPING, Source.API))
    ).outcome is Outcome.REFUSED
    assert await history(ledger, "t1") == [("PENDING", "RUNNING", 1), ("RUNNING", "SUCCEEDED", 4)]
    async with reading(ledger.engine) as conn:
        assert (
            await conn.execute(select(func.count()).select_from(RefusedObservation.__table__))
        ).scalar_one() == 2  # type: ignore[attr-defined]
        outbox = (await conn.execute(select(OutboxEntry.__table__.c.payload))).scalars().all()  # type: ignore[attr-defined]
    assert [p["state"] for p in outbox] == ["RUNNING", "SUCCEEDED"]


async def test_unknown_and_deregistered_workloads_raise(ledger: Ledger) -> None:
    with pytest.raises(UnknownWorkload):
        await apply_observation(ledger, Observation("nope", State.RUNNING, Source.PUSH, seq=1))
    await register(ledger.engine, "gone", Kind.NOTEBOOK)
    await deregister(ledger.engine, "gone")
    with pytest.raises(UnknownWorkload):
        await apply_observation(ledger, Observation("gone", State.READY, Source.PUSH, seq=1))
    again = await register(ledger.engine, "gone", Kind.NOTEBOOK)
    assert again["generation"] == 2
    old_token = Observation("gone", State.READY, Source.PUSH, seq=2, generation=1)
    assert (await apply_observation(ledger, old_token)).outcome is Outcome.WRONG_GENERATION


async def test_fifty_concurrent_observations_serialize(ledger: Ledger) -> None:
    """Separate connections race on one workload: highest seq wins, history has no gaps or repeats."""
    await register(ledger.engine, "d1", Kind.DEPLOYMENT)
    await apply_observation(ledger, Observation("d1", State.READY, Source.PUSH, seq=1))
    states = [State.READY, State.DEGRADED]
    observations = [Observation("d1", states[i % 2], Source.PUSH, seq=i) for i in range(2, 52)]
    results = await asyncio.gather(*(apply_observation(ledger, o) for o in observations))
    assert all(
        r.outcome in (Outcome.APPLIED, Outcome.UNCHANGED, Outcome.STALE_SEQ) for r in results
    )
    rows = await history(ledger, "d1")
    for (_, to_prev, seq_prev), (frm, _, seq) in zip(rows, rows[1:], strict=False):
        assert frm == to_prev, "history has a gap"
        assert seq is not None and seq_prev is not None and seq > seq_prev, "seq went backward"
    async with reading(ledger.engine) as conn:
        from statusd.models import WorkloadRow

        w = (
            await conn.execute(
                select(WorkloadRow.__table__).where(WorkloadRow.__table__.c.id == "d1")
            )
        ).one()  # type: ignore[attr-defined]
    # Seq 51 can never be stale: applied, or unchanged (and remembered); everything after it is stale.
    assert (w.state, w.last_seq) == (State.DEGRADED, 51)
    assert w.version == len(rows)


async def test_a_late_older_report_never_beats_a_newer_unchanged_one(ledger: Ledger) -> None:
    await register(ledger.engine, "d2", Kind.DEPLOYMENT)
    await apply_observation(ledger, Observation("d2", State.DEGRADED, Source.PUSH, seq=47))
    unchanged = await apply_observation(
        ledger, Observation("d2", State.DEGRADED, Source.PUSH, seq=51)
    )
    assert unchanged.outcome is Outcome.UNCHANGED
    late = await apply_observation(ledger, Observation("d2", State.READY, Source.PUSH, seq=49))
    assert late.outcome is Outcome.STALE_SEQ and late.state is State.DEGRADED
