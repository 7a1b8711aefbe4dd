"""A poll applies each verdict as its own answer arrives, and backs off UNREACHABLE endpoints
only as far as their LOST deadline (both databases, real Redis, a real HTTP peer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy import select, update

from statusd import liveness, registry
from statusd.celery.budgets import budgets
from statusd.db import reading, transaction
from statusd.lifecycle import Kind, Source, State
from statusd.models import WorkloadRow, utcnow
from statusd.runtime import Runtime
from statusd.settings import Settings
from statusd.staleness import unreachable_repoll_s
from statusd.sweeper.poller import run_poll
from statusd.sweeper.sweep import run_sweep
from statusd.transitions import Observation, apply_observation
from statusd.wiring import open_runtime
from tests.support.fleet_peer import StatusPeer

_W = WorkloadRow.__table__  # type: ignore[attr-defined]
LOST_AFTER = 120.0


@pytest.fixture
async def peer() -> AsyncIterator[StatusPeer]:
    p = StatusPeer()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def rt(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Runtime]:
    settings = make_settings(
        heartbeat_ttl=1,
        poll_timeout=60,  # a hanging endpoint outlasts every wait below
        unreachable_after=1,
        lost_after=LOST_AFTER,
        sweep_interval=1.5,
        poll_chunk=50,
        disruption_min=1000,  # a handful of stale workloads is not a disruption
    )
    runtime = await open_runtime(settings)
    yield runtime
    await runtime.close()


async def seed(rt: Runtime, wid: str, state: State, url: str) -> None:
    await registry.register(rt.engine, wid, Kind.TRAINING, status_url=url)
    await apply_observation(rt.ledger, Observation(wid, state, Source.PUSH, seq=1, actor="test"))
    await liveness.on_registered(rt.redis, rt.keys, wid, time.time() - 100)
    await rt.redis.zadd(rt.keys.last_seen(rt.keys.shard(wid)), {wid: time.time() - 100})
    await rt.redis.zrem(rt.keys.pending_since(rt.keys.shard(wid)), wid)


async def state_of(rt: Runtime, wid: str) -> State:
    async with reading(rt.engine) as conn:
        return State((await conn.execute(select(_W.c.state).where(_W.c.id == wid))).scalar_one())


async def test_answers_are_applied_while_a_hanging_endpoint_is_still_pending(
    rt: Runtime, peer: StatusPeer
) -> None:
    for wid in ("fast-1", "fast-2", "hangs"):
        await seed(rt, wid, State.RUNNING, peer.url(wid))
    peer.answer("fast-1", "SUCCEEDED")
    peer.answer("fast-2", "FAILED")
    peer.hang("hangs")
    sweep = await run_sweep(rt, "sweep-stream")
    assert sorted(w for c in sweep.chunks for w in c) == ["fast-1", "fast-2", "hangs"]
    polling = asyncio.create_task(run_poll(rt, sweep.chunks[0], sweep.token))
    deadline = time.monotonic() + 30
    while (await state_of(rt, "fast-1"), await state_of(rt, "fast-2")) != (
        State.SUCCEEDED,
        State.FAILED,
    ):
        assert time.monotonic() < deadline, "the answers were not applied"
        await asyncio.sleep(0.05)
    # Applied although the chunk's third poll is still hanging (its timeout is 60 s).
    assert not polling.done() and peer.inflight["hangs"] == 1
    polling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await polling


async def test_unreachable_is_backed_off_but_never_past_its_lost_deadline(
    rt: Runtime, peer: StatusPeer
) -> None:
    await seed(rt, "just-down", State.RUNNING, peer.url("just-down"))
    await seed(rt, "nearly-lost", State.RUNNING, peer.url("nearly-lost"))
    peer.fail("just-down", 503)
    peer.fail("nearly-lost", 503)
    await apply_observation(
        rt.ledger, Observation("nearly-lost", State.UNREACHABLE, Source.SWEEPER, actor="test")
    )
    async with transaction(rt.engine) as conn:  # UNREACHABLE for all but 2 s of LOST_AFTER
        await conn.execute(
            update(_W)
            .where(_W.c.id == "nearly-lost")
            .values(state_changed_at=utcnow() - timedelta(seconds=LOST_AFTER - 2))
        )
    sweep = await run_sweep(rt, "sweep-backoff")
    report = await run_poll(rt, sweep.chunks[0], sweep.token)
    assert report.backed_off == 2
    assert await state_of(rt, "just-down") == State.UNREACHABLE  # unreachable_after=1

    hold_ms = budgets(rt.settings).hold_ms
    just_down_ttl = await rt.redis.pttl(rt.keys.poll_lease("just-down"))
    # Not polled again next sweep: kept for the re-poll interval, far beyond one sweep's hold.
    assert hold_ms < just_down_ttl <= unreachable_repoll_s(rt.settings) * 1000
    # Due for LOST in 2 s: its lease is kept no longer than that.
    assert 0 < await rt.redis.pttl(rt.keys.poll_lease("nearly-lost")) <= 2000

    deadline = time.monotonic() + 30
    while await rt.redis.exists(rt.keys.poll_lease("nearly-lost")):
        assert time.monotonic() < deadline, "the back-off outlived the LOST deadline"
        await asyncio.sleep(0.1)
    await rt.redis.zadd(
        rt.keys.last_seen(rt.keys.shard("nearly-lost")), {"nearly-lost": time.time() - 100}
    )
    sweep = await run_sweep(rt, "sweep-lost")
    assert [w for c in sweep.chunks for w in c] == ["nearly-lost"]  # just-down still backed off
    await run_poll(rt, sweep.chunks[0], sweep.token)
    assert await state_of(rt, "nearly-lost") == State.LOST
