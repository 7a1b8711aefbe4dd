"""A sweep and its polls, in-process on both databases with real Redis and real HTTP containers.

Time is not waited for: last-seen scores are written in the past, so every case is one or two
sweeps. The Celery wiring of the same code is covered by test_sweeper_celery_*.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from statusd import liveness, registry
from statusd.db import reading
from statusd.lifecycle import Kind, Source, State
from statusd.models import TransitionRow, WorkloadRow
from statusd.runtime import Runtime
from statusd.settings import Settings
from statusd.sweeper.poller import run_poll
from statusd.sweeper.sweep import run_sweep
from statusd.transitions import Observation, apply_observation
from statusd.wiring import open_runtime
from tests.support.fleet_peer import StatusPeer

_W = WorkloadRow.__table__  # type: ignore[attr-defined]
_T = TransitionRow.__table__  # type: ignore[attr-defined]


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
        poll_timeout=0.5,
        unreachable_after=2,
        lost_after=0.3,
        start_timeout=1,
        sweep_interval=1.5,
        poll_chunk=3,
    )
    runtime = await open_runtime(settings)
    yield runtime
    await runtime.close()


async def seed(
    rt: Runtime, wid: str, state: State, url: str | None, *, seen_ago: float = 100.0
) -> None:
    """A registered workload in `state`, last heard from `seen_ago` seconds back."""
    await registry.register(rt.engine, wid, Kind.TRAINING, status_url=url)
    await liveness.on_registered(rt.redis, rt.keys, wid, time.time() - seen_ago)
    if state is not State.PENDING:
        await apply_observation(
            rt.ledger, Observation(wid, state, Source.PUSH, seq=1, actor="test")
        )
        await rt.redis.zadd(rt.keys.last_seen(rt.keys.shard(wid)), {wid: time.time() - seen_ago})
        await rt.redis.zrem(rt.keys.pending_since(rt.keys.shard(wid)), wid)


async def row(rt: Runtime, wid: str) -> Any:
    async with reading(rt.engine) as conn:
        return (await conn.execute(select(_W).where(_W.c.id == wid))).one()


async def history(rt: Runtime, wid: str) -> list[tuple[str, str, str]]:
    async with reading(rt.engine) as conn:
        rows = await conn.execute(select(_T).where(_T.c.workload_id == wid).order_by(_T.c.id))
        return [(r.to_state, r.source, r.reason or "") for r in rows]


async def cycle(rt: Runtime) -> tuple[Any, list[Any]]:
    """One sweep and the polls it enqueues, run here instead of on Celery workers."""
    result = await run_sweep(rt, f"sweep-{time.monotonic_ns()}")
    reports = [await run_poll(rt, chunk, result.token) for chunk in result.chunks]
    await rt.redis.delete(*[rt.keys.poll_lease(w) for c in result.chunks for w in c] or ["x"])
    return result, reports


async def test_silent_training_whose_endpoint_says_succeeded_becomes_succeeded(
    rt: Runtime, peer: StatusPeer
) -> None:
    await seed(rt, "silent", State.RUNNING, peer.url("silent"))
    peer.answer("silent", "SUCCEEDED")
    await cycle(rt)
    assert (await row(rt, "silent")).state == State.SUCCEEDED
    assert (State.SUCCEEDED, Source.PULL, "") in await history(rt, "silent")
    # Final: the next sweep drops it from the liveness sets and never polls it again.
    await rt.redis.zadd(rt.keys.last_seen(rt.keys.shard("silent")), {"silent": time.time() - 100})
    result, _ = await cycle(rt)
    assert result.dropped == 1 and result.enqueued == 0
    assert await rt.redis.zscore(rt.keys.last_seen(rt.keys.shard("silent")), "silent") is None
    assert len(peer.hits["silent"]) == 1


async def test_dead_goes_unreachable_then_lost_then_recovers(rt: Runtime, peer: StatusPeer) -> None:
    await seed(rt, "dead", State.RUNNING, peer.url("dead"))
    peer.fail("dead", 503)
    await cycle(rt)
    first = await row(rt, "dead")
    assert (first.state, first.poll_failures, first.last_poll_error) == (
        State.RUNNING,
        1,
        "HTTP 503",
    )
    assert first.version == 1  # bookkeeping only: no state write, no version bump
    await cycle(rt)
    assert (await row(rt, "dead")).state == State.UNREACHABLE
    await asyncio.sleep(0.4)  # STATUSD_LOST_AFTER=0.3 in UNREACHABLE
    await cycle(rt)
    assert (await row(rt, "dead")).state == State.LOST
    peer.answer("dead", "RUNNING")  # it comes back
    await cycle(rt)
    back = await row(rt, "dead")
    assert (back.state, back.poll_failures) == (State.RUNNING, 0)
    steps = [(s, src) for s, src, _ in await history(rt, "dead")]
    assert steps[-3:] == [
        (State.UNREACHABLE, Source.SWEEPER),
        (State.LOST, Source.SWEEPER),
        (State.RUNNING, Source.PULL),
    ]
    unreachable_reason = [r for s, _, r in await history(rt, "dead") if s == State.UNREACHABLE][0]
    assert "503" in unreachable_reason


async def test_no_status_url_goes_unreachable_when_stale(rt: Runtime) -> None:
    await seed(rt, "nourl", State.RUNNING, None)
    await cycle(rt)
    r = await row(rt, "nourl")
    assert r.state == State.UNREACHABLE and "no status_url" in r.last_poll_error


async def test_pending_past_start_timeout_is_polled_fresh_pending_is_not(
    rt: Runtime, peer: StatusPeer
) -> None:
    await seed(rt, "old-pending", State.PENDING, peer.url("old-pending"), seen_ago=5)
    await seed(rt, "new-pending", State.PENDING, peer.url("new-pending"), seen_ago=0)
    peer.answer("old-pending", "STARTING")
    peer.answer("new-pending", "STARTING")
    await cycle(rt)
    assert (await row(rt, "old-pending")).state == State.STARTING
    assert (await row(rt, "new-pending")).state == State.PENDING
    assert "new-pending" not in peer.hits


async def test_hang_and_garbage_fail_without_holding_up_the_others(
    rt: Runtime, peer: StatusPeer
) -> None:
    for n in range(4):
        await seed(rt, f"hang{n}", State.RUNNING, peer.url(f"hang{n}"))
        peer.hang(f"hang{n}")
    await seed(rt, "junk", State.RUNNING, peer.url("junk"))
    peer.garbage("junk")
    await seed(rt, "fine", State.RUNNING, peer.url("fine"))
    peer.answer("fine", "SUCCEEDED")
    _, reports = await cycle(rt)
    assert sum(r.polled for r in reports) == 6
    assert (await row(rt, "fine")).state == State.SUCCEEDED
    for wid in ("hang0", "junk"):
        r = await row(rt, wid)
        assert r.poll_failures == 1 and r.state == State.RUNNING
    assert (
        "garbage" in (await row(rt, "junk")).last_poll_error
        or "not JSON" in (await row(rt, "junk")).last_poll_error
    )
    assert "no answer" in (await row(rt, "hang0")).last_poll_error


async def test_a_second_sweep_does_not_enqueue_what_the_first_leased(
    rt: Runtime, peer: StatusPeer
) -> None:
    for n in range(7):
        await seed(rt, f"w{n}", State.RUNNING, peer.url(f"w{n}"))
        peer.fail(f"w{n}")
    first = await run_sweep(rt, "sweep-a")
    assert first.stale == 7 and [len(c) for c in first.chunks] == [3, 3, 1]  # STATUSD_POLL_CHUNK=3
    second = await run_sweep(rt, "sweep-b")
    assert second.stale == 7 and second.enqueued == 0 and second.busy == 7
    # A poll task that lost its lease to someone else polls nothing.
    assert (await run_poll(rt, first.chunks[0], "sweep-b")).polled == 0
    for chunk in first.chunks:
        await run_poll(rt, chunk, first.token)
    # Cool-down: right after the polls, still one interval before anyone may poll them again.
    assert (await run_sweep(rt, "sweep-c")).enqueued == 0
    await asyncio.sleep(1.5)  # STATUSD_SWEEP_INTERVAL=1.5 (x 0.9 cool-down)
    assert (await run_sweep(rt, "sweep-d")).enqueued == 7
    assert all(len(peer.hits[f"w{n}"]) == 1 for n in range(7))


async def test_deregistered_and_unknown_ids_leave_the_liveness_sets(
    rt: Runtime, peer: StatusPeer
) -> None:
    await seed(rt, "gone", State.RUNNING, peer.url("gone"))
    await registry.deregister(rt.engine, "gone")
    await rt.redis.zadd(
        rt.keys.last_seen(rt.keys.shard("never-registered")),
        {"never-registered": time.time() - 100},
    )
    result, _ = await cycle(rt)
    assert result.dropped == 2 and result.enqueued == 0
    assert (await liveness.tracked(rt.redis, rt.keys))[0] == 0


async def test_failures_of_an_earlier_stale_spell_do_not_carry_over(
    rt: Runtime, peer: StatusPeer
) -> None:
    await seed(rt, "flaky", State.RUNNING, peer.url("flaky"))
    peer.fail("flaky", 503)
    await cycle(rt)
    assert (await row(rt, "flaky")).poll_failures == 1
    # It heartbeats again (only Redis hears of it), then goes quiet for longer than the TTL.
    await liveness.mark_seen(rt.redis, rt.keys, {"flaky": (time.time(), None)})
    await asyncio.sleep(1.1)  # STATUSD_HEARTBEAT_TTL=1
    await cycle(rt)
    second = await row(rt, "flaky")
    # One failed poll of a new spell, not the second in a row: STATUSD_UNREACHABLE_AFTER=2.
    assert (second.state, second.poll_failures) == (State.RUNNING, 1)
    await cycle(rt)  # no sign of life since: now it is two in a row
    third = await row(rt, "flaky")
    assert (third.state, third.poll_failures) == (State.UNREACHABLE, 2)
