"""A poll cut off by a Redis outage holds its workloads back seconds, not minutes: the leases it
could not release (Redis gone at the release, and back with its data from the AOF) expire within
their short TTL, so the next sweeps poll those workloads again soon. A running poll renews its
leases meanwhile, so a poll that takes longer than one TTL keeps them.

Real redis-server (stopped and started by the test, AOF on), both databases, a real HTTP status
endpoint that hangs; the sweep and the poll run in-process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from statusd import liveness, registry
from statusd.celery.budgets import budgets
from statusd.errors import is_transient
from statusd.keys import Keys
from statusd.lifecycle import Kind, Source, State
from statusd.runtime import Runtime
from statusd.settings import Settings
from statusd.sweeper import poll_leases
from statusd.sweeper.poller import run_poll
from statusd.sweeper.sweep import run_sweep
from statusd.transitions import Observation, apply_observation
from statusd.wiring import open_runtime
from tests.support.fleet_peer import StatusPeer
from tests.support.redis_proc import RedisProcess

# What a lease cut off by an outage may hold its workload back: a few sweeps, never the minutes a
# poll task's whole time limit spans.
CUT_OFF_HOLD_MAX_MS = 30_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "redis", appendonly=True)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def peer() -> AsyncIterator[StatusPeer]:
    p = StatusPeer()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def rt(make_settings: Callable[..., Settings], store: RedisProcess) -> AsyncIterator[Runtime]:
    settings = make_settings(
        redis_url=store.url,
        heartbeat_ttl=1,
        poll_timeout=1.0,
        unreachable_after=5,
        lost_after=3600,
        sweep_interval=1.0,
    )
    runtime = await open_runtime(settings)
    yield runtime
    await runtime.close()


async def test_leases_of_a_poll_cut_off_by_redis_expire_within_their_short_ttl(
    rt: Runtime, peer: StatusPeer, store: RedisProcess
) -> None:
    wid = "silent"
    await registry.register(rt.engine, wid, Kind.TRAINING, status_url=peer.url(wid))
    await liveness.on_registered(rt.redis, rt.keys, wid, time.time() - 100)
    await apply_observation(
        rt.ledger, Observation(wid, State.RUNNING, Source.PUSH, seq=1, actor="test")
    )
    await rt.redis.zadd(rt.keys.last_seen(rt.keys.shard(wid)), {wid: time.time() - 100})
    peer.hang(wid)

    result = await run_sweep(rt, "sweep-cut-off")
    assert result.chunks == [[wid]]
    polling = asyncio.create_task(run_poll(rt, result.chunks[0], result.token, "run-1"))
    deadline = time.monotonic() + 10
    while not peer.hits[wid]:
        assert time.monotonic() < deadline, "the poll never reached the endpoint"
        await asyncio.sleep(0.02)
    # Redis goes away while the endpoint hangs: the poll times out and cannot release its lease.
    await asyncio.to_thread(store.stop)  # a clean shutdown: the AOF keeps the lease
    with pytest.raises(Exception) as raised:
        await polling
    assert is_transient(raised.value)
    await asyncio.to_thread(store.start)

    check = Redis.from_url(store.url)
    try:
        lease = rt.keys.poll_lease(wid)
        assert await check.get(lease) == poll_leases.run_token(result.token, "run-1").encode()
        ttl_ms = await check.pttl(lease)
    finally:
        await check.aclose()
    assert 0 < ttl_ms <= budgets(rt.settings).lease_ms
    assert ttl_ms <= CUT_OFF_HOLD_MAX_MS, f"a cut-off lease holds its workload {ttl_ms} ms"


async def test_a_running_poll_keeps_its_leases_past_their_ttl(
    redis: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix, 16)
    # Long enough that a loaded machine's late wake-up (a renewal due every 400 ms) does not let
    # a lease run out: the test is about which leases are renewed, not about the timer's slack.
    ttl_ms = 1200
    for wid in ("mine", "taken"):
        await redis.set(keys.poll_lease(wid), "run-a", px=ttl_ms)
    await redis.set(keys.poll_lease("other"), "run-b", px=ttl_ms)
    held = {"mine": 0.0}
    renewal = poll_leases.LeaseRenewal(redis, keys, held.keys(), "run-a", ttl_ms)
    try:
        held["taken"] = 0.0  # taken from the sweep's queue after the run started
        await asyncio.sleep(ttl_ms * 3 / 1000)
        assert await redis.get(keys.poll_lease("mine")) == b"run-a"
        assert await redis.get(keys.poll_lease("taken")) == b"run-a"
        assert await redis.get(keys.poll_lease("other")) is None  # not ours: never renewed
    finally:
        await renewal.stop()
    await asyncio.sleep(ttl_ms * 2 / 1000)
    assert await redis.get(keys.poll_lease("mine")) is None  # stopped: it runs out
