"""The pull fallback end to end: API + consumers, a real Celery worker process and a real beat
process, real HTTP containers on loopback; on SQLite and PostgreSQL, with Redis and RabbitMQ brokers.

Timings are short (STATUSD_HEARTBEAT_TTL=1, SWEEP_INTERVAL=0.5, POLL_TIMEOUT=0.5, LOST_AFTER=2);
waits are bounded loops with generous slack, never timing assertions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from statusd.db import create_engine, reading
from statusd.lifecycle import Kind, State
from statusd.models import WorkloadRow
from statusd.settings import Settings
from statusd.simulate.control import Beat, StatusdAPI
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.celery_procs import DEPLOYMENTS, running_beat, running_worker
from tests.support.fleet_api import running_api
from tests.support.fleet_peer import StatusPeer
from tests.support.fleet_wait import wait_until

TTL, INTERVAL, POLL_TIMEOUT, LOST_AFTER = 1.0, 0.5, 0.5, 2.0
# Detection needs TTL + one sweep interval + the failing polls; processes on a busy 2-core box
# (other test files run in parallel) get generous slack on top.
SLACK = 20.0
PULL_BOUND = TTL + INTERVAL + POLL_TIMEOUT + SLACK
_W = WorkloadRow.__table__  # type: ignore[attr-defined]


@pytest.fixture
def stack_settings(make_settings: Callable[..., Settings], deployment_broker: str) -> Settings:
    return make_settings(
        broker_url=deployment_broker,
        heartbeat_ttl=TTL,
        sweep_interval=INTERVAL,
        poll_timeout=POLL_TIMEOUT,
        unreachable_after=2,
        lost_after=LOST_AFTER,
        start_timeout=2,
        consumers=1,
        consumer_block_ms=100,
    )


@pytest.fixture
async def peer() -> AsyncIterator[StatusPeer]:
    p = StatusPeer()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def stack(stack_settings: Settings, tmp_path: Path, redis: Redis) -> Iterator[str]:
    """API (with consumers) + `statusd worker` (sweep, poll) + `statusd beat`; yields the API URL."""
    env = settings_env(stack_settings)
    with (
        running_api(env, tmp_path) as url,
        running_worker(env, tmp_path, queues="sweep,poll", concurrency=2),
        running_beat(env, tmp_path),
    ):
        yield url


async def _state(api: StatusdAPI, wid: str) -> str:
    return str((await api.workload(wid))["state"])


async def _history(api: StatusdAPI, wid: str) -> list[tuple[str, str]]:
    return [(t["to"], t["source"]) for t in await api.transitions(wid)]


async def _bookkeeping(settings: Settings, wid: str) -> Any:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with reading(engine) as conn:
            return (await conn.execute(select(_W).where(_W.c.id == wid))).one()
    finally:
        await engine.dispose()


@DEPLOYMENTS
async def test_pull_fallback_end_to_end(
    stack: str, stack_settings: Settings, peer: StatusPeer
) -> None:
    ids = [
        "silent",
        "dead",
        "junk",
        *[f"hang{n}" for n in range(3)],
        *[f"other{n}" for n in range(5)],
    ]
    async with StatusdAPI(stack, TEST_API_TOKEN) as api:
        tokens = {w: await api.register(w, Kind.TRAINING, peer.url(w), {"t": "e2e"}) for w in ids}
        for w in ids:
            peer.answer(w, "RUNNING")
        assert await api.heartbeat([Beat(w, tokens[w], State.RUNNING, 1) for w in ids]) == len(ids)
        for w in ids:
            await wait_until(
                lambda w=w: _state(api, w),
                lambda s: s == "RUNNING",
                within=SLACK,
                what=f"{w} RUNNING by heartbeat",
            )

        # Heartbeats stop for everyone. The endpoints tell different stories.
        peer.answer("silent", "SUCCEEDED")  # the training finished, its heartbeat thread died first
        peer.fail("dead", 503)
        peer.garbage("junk")
        for n in range(3):
            peer.hang(f"hang{n}")
        for n in range(5):
            peer.answer(f"other{n}", "SUCCEEDED")

        # The silent case: SUCCEEDED by pull within TTL + sweep interval + poll timeout (+ slack).
        await wait_until(
            lambda: _state(api, "silent"),
            lambda s: s == "SUCCEEDED",
            within=PULL_BOUND,
            what="silent -> SUCCEEDED",
        )
        assert ("SUCCEEDED", "pull") in await _history(api, "silent")
        # Hanging and garbage endpoints never hold up the others.
        for n in range(5):
            await wait_until(
                lambda n=n: _state(api, f"other{n}"),
                lambda s: s == "SUCCEEDED",
                within=PULL_BOUND,
                what=f"other{n} despite hangs",
            )

        # dead: UNREACHABLE after UNREACHABLE_AFTER failed polls, LOST after LOST_AFTER in UNREACHABLE.
        await wait_until(
            lambda: _state(api, "dead"),
            lambda s: s == "UNREACHABLE",
            within=PULL_BOUND,
            what="dead -> UNREACHABLE",
        )
        await wait_until(
            lambda: _state(api, "dead"),
            lambda s: s == "LOST",
            within=LOST_AFTER + SLACK,
            what="dead -> LOST",
        )
        steps = await api.transitions("dead")
        unreachable = next(t for t in steps if t["to"] == "UNREACHABLE")
        lost = next(t for t in steps if t["to"] == "LOST")
        assert unreachable["source"] == lost["source"] == "sweeper"
        assert "503" in (unreachable["reason"] or "")
        from datetime import datetime

        gap = datetime.fromisoformat(lost["recorded_at"]) - datetime.fromisoformat(
            unreachable["recorded_at"]
        )
        assert gap.total_seconds() >= LOST_AFTER  # LOST never before the configured time
        dead_row = await _bookkeeping(stack_settings, "dead")
        assert dead_row.poll_failures >= 2 and dead_row.last_poll_error == "HTTP 503"

        # hang and garbage count as failed polls too.
        for w in ("junk", "hang0"):
            await wait_until(
                lambda w=w: _state(api, w),
                lambda s: s in ("UNREACHABLE", "LOST"),
                within=PULL_BOUND,
                what=f"{w} -> UNREACHABLE",
            )
        assert "no answer" in (await _bookkeeping(stack_settings, "hang0")).last_poll_error

        # Recovery: the dead container's endpoint comes back (pull); junk heartbeats again (push).
        peer.answer("dead", "RUNNING")
        await wait_until(
            lambda: _state(api, "dead"),
            lambda s: s == "RUNNING",
            within=PULL_BOUND,
            what="dead recovers by pull",
        )
        assert (await _history(api, "dead"))[-1] == ("RUNNING", "pull")
        peer.answer("junk", "RUNNING")
        assert await api.heartbeat([Beat("junk", tokens["junk"], State.RUNNING, 10**9)]) == 1
        await wait_until(
            lambda: _state(api, "junk"),
            lambda s: s == "RUNNING",
            within=SLACK,
            what="junk recovers by heartbeat",
        )
    # Never two polls of one workload at once.
    assert max(peer.max_inflight.values()) == 1
