"""The pull path inside a maintenance window (both databases, real Redis, a real HTTP peer): a
window that starts between a sweep and its poll turns that poll's failure into no verdict, and
the next sweep neither polls nor counts the covered workload; its twin outside the window goes
UNREACHABLE from the same failed poll."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from statusd import liveness, maintenance, registry
from statusd.db import reading
from statusd.lifecycle import Kind, Source, State
from statusd.models import utcnow
from statusd.runtime import Runtime
from statusd.settings import Settings
from statusd.silences import Matcher
from statusd.sweeper.poller import run_poll
from statusd.sweeper.sweep import run_sweep
from statusd.tables import WORKLOADS
from statusd.transitions import Observation, apply_observation
from statusd.wiring import open_runtime
from tests.support.fleet_peer import StatusPeer


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
        poll_timeout=5,
        unreachable_after=1,
        lost_after=600,
        poll_chunk=50,
        disruption_min=1000,  # two silent workloads are not a disruption
    )
    runtime = await open_runtime(settings)
    yield runtime
    await runtime.close()


async def seed(rt: Runtime, wid: str, url: str) -> None:
    """RUNNING, last heard 100 s ago: silent far past the 1 s TTL."""
    await registry.register(rt.engine, wid, Kind.TRAINING, status_url=url)
    await apply_observation(
        rt.ledger, Observation(wid, State.RUNNING, Source.PUSH, seq=1, actor="t")
    )
    await liveness.mark_seen(rt.redis, rt.keys, {wid: (time.time() - 100, 1)})


async def state_of(rt: Runtime, wid: str) -> State:
    async with reading(rt.engine) as conn:
        query = select(WORKLOADS.c.state).where(WORKLOADS.c.id == wid)
        return State((await conn.execute(query)).scalar_one())


async def test_a_failed_poll_inside_a_window_convicts_nobody(rt: Runtime, peer: StatusPeer) -> None:
    for wid in ("in-window", "outside"):
        await seed(rt, wid, peer.url(wid))
        peer.fail(wid, 503)
    sweep = await run_sweep(rt, "sweep-1")
    assert sorted(w for c in sweep.chunks for w in c) == ["in-window", "outside"]
    # The window starts after the sweep leased both, before their poll.
    now = utcnow()
    await maintenance.create(
        rt.engine,
        Matcher(workload_id="in-window"),
        "switch replacement",
        starts_at=now - timedelta(seconds=1),
        ends_at=now + timedelta(minutes=10),
    )
    report = await run_poll(rt, sweep.chunks[0], sweep.token)
    assert report.failed == 2
    assert await state_of(rt, "outside") == State.UNREACHABLE
    assert await state_of(rt, "in-window") == State.RUNNING

    # Its lease ends; the next sweep skips it (excused) without polling or counting it.
    await rt.redis.delete(rt.keys.poll_lease("in-window"))
    again = await run_sweep(rt, "sweep-2")
    assert "in-window" not in [w for c in again.chunks for w in c]
    assert again.stale == 1  # only "outside" (backed off, so busy rather than enqueued)
