"""apply_observations on real SQLite and PostgreSQL: a batch is one transaction, yet one poison
observation (a seq the database refuses) fails alone: every other workload is applied exactly
once, with its history and outbox rows, in the order given; the poison workload's later
observations are not applied past its failure."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from statusd.db import create_engine, reading
from statusd.errors import UnknownWorkload
from statusd.lifecycle import Kind, Source, State
from statusd.models import OutboxEntry, TransitionRow, WorkloadRow
from statusd.registry import register
from statusd.transitions import Ledger, Observation, Outcome, Result, apply_observations

T = TransitionRow.__table__  # type: ignore[attr-defined]
O = OutboxEntry.__table__  # type: ignore[attr-defined]  # noqa: E741
W = WorkloadRow.__table__  # type: ignore[attr-defined]
GOOD = [f"good-{i:02d}" for i in range(30)]


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    engine = create_engine(database_url, pool_size=4)
    yield Ledger(engine=engine)
    await engine.dispose()


def push(wid: str, state: State, seq: int) -> Observation:
    return Observation(wid, state, Source.PUSH, seq=seq, actor="heartbeat")


async def rows(ledger: Ledger) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, int]]]:
    async with reading(ledger.engine) as conn:
        history = await conn.execute(
            select(T.c.workload_id, T.c.from_state, T.c.to_state, T.c.seq, T.c.id).order_by(T.c.id)
        )
        outbox = await conn.execute(select(O.c.workload_id, O.c.transition_id).order_by(O.c.id))
        return (
            [(w, str(a), str(b), s) for w, a, b, s, _ in history],
            [(w, t) for w, t in outbox],
        )


async def test_one_poison_observation_fails_alone(ledger: Ledger) -> None:
    for wid in [*GOOD, "poison"]:
        await register(ledger.engine, wid, Kind.TRAINING)
    batch: list[Observation] = []
    for wid in GOOD[:15]:
        batch.append(push(wid, State.RUNNING, 1))
    batch += [
        push("poison", State.RUNNING, 1),  # applies
        push("poison", State.STOPPING, 2**70),  # the database refuses this seq: poison
        push("poison", State.FAILED, 3),  # after the poison: must wait for it
        push("nobody", State.RUNNING, 1),
    ]
    for wid in GOOD[15:]:
        batch += [push(wid, State.RUNNING, 1), push(wid, State.SUCCEEDED, 2)]

    answers = await apply_observations(ledger, batch)

    assert len(answers) == len(batch)
    by_obs = list(zip(batch, answers, strict=True))
    poison = [a for o, a in by_obs if o.workload_id == "poison"]
    assert isinstance(poison[0], Result) and poison[0].outcome is Outcome.APPLIED
    assert isinstance(poison[1], Exception) and not isinstance(poison[1], UnknownWorkload)
    assert poison[2] is poison[1]  # not applied past the failure: the workload's order holds
    assert [isinstance(a, UnknownWorkload) for o, a in by_obs if o.workload_id == "nobody"] == [
        True
    ]
    good = [a for o, a in by_obs if o.workload_id.startswith("good-")]
    assert all(isinstance(a, Result) and a.outcome is Outcome.APPLIED for a in good)

    history, outbox = await rows(ledger)
    expected = [(w, "PENDING", "RUNNING", 1) for w in GOOD]
    expected += [(w, "RUNNING", "SUCCEEDED", 2) for w in GOOD[15:]]
    expected.append(("poison", "PENDING", "RUNNING", 1))
    assert sorted(history) == sorted(expected)  # each exactly once
    for wid in GOOD[15:]:  # in the order given
        assert [h[2] for h in history if h[0] == wid] == ["RUNNING", "SUCCEEDED"]
    async with reading(ledger.engine) as conn:
        ids = (await conn.execute(select(T.c.id).order_by(T.c.id))).scalars().all()
        states = dict((await conn.execute(select(W.c.id, W.c.state))).tuples().all())
    assert sorted(t for _, t in outbox) == list(ids)  # one outbox row per transition, no other
    assert states["poison"] == "RUNNING" and states["good-00"] == "RUNNING"
    assert states["good-29"] == "SUCCEEDED"

    # The same batch again (a redelivery after a crash): nothing is applied twice.
    again = await apply_observations(ledger, [o for o in batch if o.workload_id != "poison"])
    assert not any(isinstance(a, Result) and a.outcome is Outcome.APPLIED for a in again)
    assert sorted((await rows(ledger))[0]) == sorted(expected)


async def test_a_batch_reads_each_workload_as_its_earlier_observations_left_it(
    ledger: Ledger,
) -> None:
    """Within one transaction: an older seq after a newer one is stale, a repeat is unchanged,
    a refusal is recorded at the version the earlier change made."""
    await register(ledger.engine, "t", Kind.TRAINING)
    answers = await apply_observations(
        ledger,
        [
            push("t", State.RUNNING, 5),
            push("t", State.STARTING, 4),  # older seq: stale
            push("t", State.RUNNING, 6),  # same state, newer seq: unchanged (seq remembered)
            push("t", State.STARTING, 7),  # backward: refused at version 1
            push("t", State.SUCCEEDED, 8),
        ],
    )
    outcomes = [a.outcome for a in answers if isinstance(a, Result)]
    assert outcomes == [
        Outcome.APPLIED,
        Outcome.STALE_SEQ,
        Outcome.UNCHANGED,
        Outcome.REFUSED,
        Outcome.APPLIED,
    ]
    assert [a.version for a in answers if isinstance(a, Result)] == [1, 1, 1, 1, 2]
    history, _ = await rows(ledger)
    assert history == [("t", "PENDING", "RUNNING", 5), ("t", "RUNNING", "SUCCEEDED", 8)]
    async with reading(ledger.engine) as conn:
        row = (await conn.execute(select(W.c.version, W.c.last_seq).where(W.c.id == "t"))).one()
    assert tuple(row) == (2, 8)
