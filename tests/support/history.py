"""Backdated workload histories for tests of the fleet picture and the timeline.

apply_observation stamps transitions with the real clock; a picture of the last hour needs moves
spread over it. This writes what apply_observation would have written (the transition rows and the
workload's final state) at chosen times, in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.db import transaction
from statusd.lifecycle import Kind, Source, State
from statusd.models import TransitionRow, WorkloadRow
from statusd.registry import register

_W = WorkloadRow.__table__  # type: ignore[attr-defined]
_T = TransitionRow.__table__  # type: ignore[attr-defined]


async def record_story(
    engine: AsyncEngine,
    workload_id: str,
    kind: Kind,
    created: datetime,
    moves: Sequence[tuple[datetime, State]],
    labels: dict[str, str] | None = None,
) -> None:
    """Register `workload_id` as if at `created`, then record each (time, new state) move."""
    await register(engine, workload_id, kind, labels=labels or {})
    async with transaction(engine) as conn:
        state = State.PENDING
        for when, target in moves:
            await conn.execute(
                insert(_T).values(
                    workload_id=workload_id,
                    kind=kind,
                    from_state=state,
                    to_state=target,
                    source=Source.PUSH,
                    observed_at=when,
                    recorded_at=when,
                )
            )
            state = target
        changed = moves[-1][0] if moves else created
        await conn.execute(
            update(_W)
            .where(_W.c.id == workload_id)
            .values(created_at=created, state=state, state_changed_at=changed)
        )


def state_at(
    created: datetime, moves: Sequence[tuple[datetime, State]], at: datetime
) -> State | None:
    """The oracle: the state a story says the workload was in at `at` (None: not registered yet)."""
    if created > at:
        return None
    state = State.PENDING
    for when, target in moves:
        if when <= at:
            state = target
    return state
