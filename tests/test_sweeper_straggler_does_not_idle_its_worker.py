"""A chunk waiting on a hanging endpoint does not idle its worker process: the process's one
prefork child polls the next chunk's workloads in the slots the straggler leaves free and applies
their verdicts while the straggler still hangs, and no workload is polled twice. If the child is
SIGKILLed mid-poll, the redelivered task polls again what the killed run had taken.

Real `statusd worker` (one child: deterministic order), Redis and RabbitMQ brokers, both
databases, real HTTP containers on loopback. The sweep runs here (statusd.sweeper.sweep.run_sweep)
and its chunks go to the worker as the `sweep` task would send them, in order.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from statusd import liveness, registry
from statusd.celery.application import create_celery
from statusd.celery.names import POLL_TASK
from statusd.db import reading
from statusd.lifecycle import Kind, Source, State
from statusd.models import WorkloadRow
from statusd.runtime import Runtime
from statusd.settings import Settings
from statusd.sweeper.sweep import run_sweep
from statusd.transitions import Observation, apply_observation
from statusd.wiring import open_runtime
from tests.conftest import settings_env
from tests.support.celery_procs import DEPLOYMENTS, running_worker
from tests.support.fleet_peer import StatusPeer
from tests.support.fleet_wait import wait_until
from tests.support.processes import ManagedProcess

# Long enough that the straggler is plainly still hanging while the rest is applied; the loop
# below fails as soon as it stops hanging, so nothing depends on how fast the box is.
POLL_TIMEOUT = 8.0
SLACK = 60.0  # bounded waits on a busy 2-core box; never an assertion on speed
_W = WorkloadRow.__table__  # type: ignore[attr-defined]


@pytest.fixture
async def peer() -> AsyncIterator[StatusPeer]:
    p = StatusPeer()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def rt(
    make_settings: Callable[..., Settings], deployment_broker: str, redis: Redis
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        broker_url=deployment_broker,
        heartbeat_ttl=1,
        poll_timeout=POLL_TIMEOUT,
        poll_chunk=2,  # chunk A = the straggler + one, chunk B = two that answer
        sweep_interval=30,  # no cool-down expires during the test
        unreachable_after=5,  # failures stay bookkeeping: states change only by answers
        lost_after=3600,
    )
    runtime = await open_runtime(settings)
    yield runtime
    await runtime.close()


async def seed(rt: Runtime, wid: str, url: str, seen_ago: float) -> None:
    """RUNNING, silent for `seen_ago` s (the sweep takes the oldest first: chunk order)."""
    await registry.register(rt.engine, wid, Kind.TRAINING, status_url=url)
    await liveness.on_registered(rt.redis, rt.keys, wid, time.time() - seen_ago)
    await apply_observation(
        rt.ledger, Observation(wid, State.RUNNING, Source.PUSH, seq=1, actor="test")
    )
    await rt.redis.zadd(rt.keys.last_seen(rt.keys.shard(wid)), {wid: time.time() - seen_ago})
    await rt.redis.zrem(rt.keys.pending_since(rt.keys.shard(wid)), wid)


async def row(rt: Runtime, wid: str) -> Any:
    async with reading(rt.engine) as conn:
        return (await conn.execute(select(_W).where(_W.c.id == wid))).one()


async def states(rt: Runtime, ids: tuple[str, ...]) -> dict[str, State]:
    return {wid: State((await row(rt, wid)).state) for wid in ids}


def poll_reports(worker: ManagedProcess) -> list[dict[str, Any]]:
    """The `poll.done` lines the worker logged (JSON), in order."""
    out = []
    for line in worker.log_tail(10_000_000).splitlines():
        if '"poll.done"' in line:
            out.append(json.loads(line[line.index("{") :]))
    return out


def send_chunks(settings: Settings, chunks: list[list[str]], token: str) -> None:
    """One `poll` message per chunk, in order, as statusd.celery.sweeper_tasks.sweep sends them."""
    app = create_celery(settings)
    try:
        for chunk in chunks:
            app.send_task(POLL_TASK, args=[chunk, token])
    finally:
        app.close()


def pool_child(worker: ManagedProcess) -> psutil.Process:
    children = psutil.Process(worker.pid).children(recursive=True)
    assert len(children) == 1, f"expected one prefork child, found {children}"
    return children[0]


@DEPLOYMENTS
async def test_next_chunk_is_applied_while_a_straggler_hangs(
    rt: Runtime, peer: StatusPeer, tmp_path: Path
) -> None:
    peer.hang("hang")
    await seed(rt, "hang", peer.url("hang"), 400)
    for wid, ago in (("a1", 300), ("b1", 200), ("b2", 100)):
        peer.answer(wid, "SUCCEEDED")
        await seed(rt, wid, peer.url(wid), ago)
    env = settings_env(rt.settings)
    with running_worker(env, tmp_path, queues="poll", concurrency=1) as worker:
        sweep = await run_sweep(rt, "sweep-straggler")
        assert sweep.chunks == [["hang", "a1"], ["b1", "b2"]]
        send_chunks(rt.settings, sweep.chunks, sweep.token)

        # Chunk B's verdicts must land while chunk A's task (the only child) still waits on its
        # straggler: the states are read first, then the straggler is seen still in flight.
        while True:
            now = await states(rt, ("a1", "b1", "b2"))
            if set(now.values()) == {State.SUCCEEDED} and peer.inflight["hang"] == 1:
                break
            assert not (peer.hits["hang"] and peer.inflight["hang"] == 0), (
                f"the straggler ended before the next chunk was applied: {now}\n{worker.log_tail()}"
            )
            await asyncio.sleep(0.05)

        reports = await wait_until(
            lambda: asyncio.sleep(0, result=poll_reports(worker)),
            lambda r: len(r) == 2,
            within=POLL_TIMEOUT + SLACK,
            what="both poll tasks done",
        )
    first, second = reports
    # A's task polled its chunk and took B's; B's own task then found nothing left to poll.
    assert (first["leased"], first["taken"], first["polled"]) == (2, 2, 4)
    assert (second["leased"], second["polled"]) == (0, 0)
    assert {wid: len(peer.hits[wid]) for wid in ("hang", "a1", "b1", "b2")} == dict.fromkeys(
        ("hang", "a1", "b1", "b2"), 1
    )
    straggler = await row(rt, "hang")
    assert straggler.poll_failures == 1 and "no answer" in straggler.last_poll_error


@DEPLOYMENTS
async def test_a_killed_run_is_redelivered_with_what_it_had_taken(
    rt: Runtime, peer: StatusPeer, tmp_path: Path
) -> None:
    # Both chunks hang, so the one child holds all four polls in flight when it is killed: its
    # own two and the two it took from chunk B.
    for wid, ago in (("a0", 400), ("a1", 300), ("b0", 200), ("b1", 100)):
        peer.hang(wid)
        await seed(rt, wid, peer.url(wid), ago)
    env = settings_env(rt.settings)
    with running_worker(env, tmp_path, queues="poll", concurrency=1) as worker:
        sweep = await run_sweep(rt, "sweep-killed")
        assert sweep.chunks == [["a0", "a1"], ["b0", "b1"]]
        send_chunks(rt.settings, sweep.chunks, sweep.token)
        ids = ("a0", "a1", "b0", "b1")
        await wait_until(
            lambda: asyncio.sleep(0, result={w: peer.inflight[w] for w in ids}),
            lambda inflight: all(n == 1 for n in inflight.values()),
            within=SLACK,
            what="the first task polling its chunk and the one it took",
        )
        # The killed run's polls stay hanging; the redelivered run's fail at once (503), so it
        # need not wait out the poll timeout to record them.
        for wid in ids:
            peer.fail(wid, 503)
        pool_child(worker).kill()  # SIGKILL mid-poll; Celery redelivers the task (acks_late)

        # The redelivered run (same task id) polls again all four, the two it had taken included,
        # and records each failed poll; B's own message finds nothing of its own to poll.
        await wait_until(
            lambda: asyncio.sleep(0, result={w: len(peer.hits[w]) for w in ids}),
            lambda hits: all(n == 2 for n in hits.values()),
            within=SLACK,
            what="every poll of the killed run made again",
        )
        reports = await wait_until(
            lambda: asyncio.sleep(0, result=poll_reports(worker)),
            lambda r: len(r) == 2,
            within=POLL_TIMEOUT + SLACK,
            what="both poll tasks done",
        )
    # The redelivery may run before or after B's own message (it went back to the queue).
    assert sorted((r["leased"], r["polled"]) for r in reports) == [(0, 0), (4, 4)]
    assert {w: len(peer.hits[w]) for w in ids} == dict.fromkeys(ids, 2)
    for wid in ids:
        assert (await row(rt, wid)).poll_failures == 1  # the killed run recorded nothing
