"""Maintenance windows and quiet periods with real processes: the API with its consumers, a real
Celery worker with beat (sweep, poll), a workload process using statusd-client; both databases.

Fast settings (STATUSD_HEARTBEAT_TTL=1, sweeps every 0.5 s). No cron tick is awaited: the
recurring window runs every 2 minutes in Asia/Kolkata (+05:30), and its duration is chosen so
the occurrence that started last is still in force when the test starts, ending a few seconds
later (every occurrence lasts that long; the rule is the same for 30 s).

- A workload silent inside the window stays out of UNREACHABLE and raises no alert; silent
  beyond the window's end plus a TTL it goes UNREACHABLE (and alerts then). Its silent twin
  outside the window goes UNREACHABLE within a TTL and alerts.
- A workload that announced `quiet_for_s: 3` (statusd-client's `hb.quiet(3, ...)`) and then went
  silent stays RUNNING for 3 s plus a TTL and then goes UNREACHABLE.

Every check is on recorded moments (transition times against the window's end and the
announced deadline), never on how long a wait took.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from statusd.db import create_engine, reading
from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.models import OutboxTarget
from statusd.settings import Settings
from statusd.simulate.control import Beat, StatusdAPI
from statusd.tables import OUTBOX
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.celery_procs import running_worker
from tests.support.databases import ROOT
from tests.support.fleet_api import running_api
from tests.support.fleet_wait import wait_until
from tests.support.processes import ManagedProcess, start_process, wait_for_log

TTL, INTERVAL, QUIET_S, MAX_QUIET_S = 1.0, 0.5, 3, 5
WINDOW_LEFT_S = 8  # the occurrence in force ends this many seconds after the test creates it
CYCLE_S = 120  # the window's schedule, `*/2 * * * *`: an occurrence every 2 minutes
SLACK = 30.0  # bounded waits on a busy 2-core box; never asserted as timings
KOLKATA = ZoneInfo("Asia/Kolkata")


@pytest.fixture
def stack_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        heartbeat_ttl=TTL,
        sweep_interval=INTERVAL,
        poll_timeout=0.5,
        unreachable_after=1,
        lost_after=600,
        start_timeout=60,
        consumers=1,
        consumer_block_ms=100,
        max_quiet_s=MAX_QUIET_S,
        # Nobody drains them here: the alert rows themselves show what was raised.
        alert_webhooks=["http://127.0.0.1:9/alerts"],
    )


@pytest.fixture
def stack(stack_settings: Settings, tmp_path: Path, redis: Redis) -> Iterator[str]:
    env = settings_env(stack_settings)
    with (
        running_api(env, tmp_path) as url,
        running_worker(env, tmp_path, queues="sweep,poll", concurrency=2, beat=True),
    ):
        yield url


def current_occurrence(now: datetime) -> tuple[datetime, int]:
    """The start of the `*/2 * * * *` occurrence in Kolkata that began last, and a duration that
    keeps it in force for WINDOW_LEFT_S more seconds."""
    local = now.astimezone(KOLKATA)
    start = local.replace(minute=local.minute - local.minute % 2, second=0, microsecond=0)
    return start, math.ceil((now - start).total_seconds()) + WINDOW_LEFT_S


async def alert_rows(settings: Settings, workload_id: str) -> list[Any]:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with reading(engine) as conn:
            query = select(OUTBOX.c.created_at, OUTBOX.c.payload).where(
                OUTBOX.c.workload_id == workload_id, OUTBOX.c.target == OutboxTarget.ALERT
            )
            return list((await conn.execute(query)).all())
    finally:
        await engine.dispose()


async def entered(api: StatusdAPI, workload_id: str, state: State) -> datetime | None:
    """When the workload's newest transition into `state` was recorded (None: not there)."""
    moments = [
        datetime.fromisoformat(t["recorded_at"])
        for t in await api.transitions(workload_id)
        if t["to"] == state.value
    ]
    return max(moments, default=None)


def start_quiet_child(url: str, workload_id: str, token: str, log_dir: Path) -> ManagedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")}
    env.update(
        STATUSD_URL=url,
        STATUSD_WORKLOAD_ID=workload_id,
        STATUSD_HEARTBEAT_TOKEN=token,
        PYTHONPATH=str(ROOT),
    )
    return start_process(
        [sys.executable, "-m", "tests.support.client_child", "quiet", str(QUIET_S)],
        env=env,
        cwd=ROOT,
        log_dir=log_dir,
        name="client-quiet",
    )


async def test_windows_and_quiet_periods_keep_silent_workloads_out_of_unreachable(
    stack: str, stack_settings: Settings, redis_prefix: str, tmp_path: Path
) -> None:
    async with StatusdAPI(stack, TEST_API_TOKEN) as api:
        tokens = {
            "in-window": await api.register("in-window", Kind.TRAINING, None, {"rack": "r7"}),
            "outside": await api.register("outside", Kind.TRAINING, None, {"rack": "r8"}),
            "quiet": await api.register("quiet", Kind.TRAINING, None, {"rack": "r8"}),
        }
        # The window must end well before the schedule's next occurrence begins, or the silent
        # workload is excused again before it can be convicted: late in a 2-minute cycle, start
        # in the next one.
        now = datetime.now(UTC)
        start, duration = current_occurrence(now)
        if duration + TTL + SLACK > CYCLE_S:
            await asyncio.sleep((start + timedelta(seconds=CYCLE_S) - now).total_seconds() + 0.5)
            start, duration = current_occurrence(datetime.now(UTC))
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {TEST_API_TOKEN}"}
        ) as http:
            async with http.post(
                f"{stack}/v1/maintenances",
                json={
                    "match": {"label": "rack:r7"},
                    "schedule": "*/2 * * * *",
                    "duration_s": duration,
                    "timezone": "Asia/Kolkata",
                    "reason": "rack r7 firmware, every 2 minutes",
                },
            ) as resp:
                window = await resp.json()
                assert resp.status == 201, window
        assert window["active"] is True, window
        assert datetime.fromisoformat(window["next_start"]) == start
        window_end = datetime.fromisoformat(window["next_end"])
        assert window_end == start + timedelta(seconds=duration)

        beats = [Beat(w, tokens[w], State.RUNNING, 1) for w in ("in-window", "outside")]
        assert await api.heartbeat(beats) == 2
        heard = datetime.now(UTC)  # both are silent from here on
        child = start_quiet_child(stack, "quiet", tokens["quiet"], tmp_path)
        try:
            await asyncio.to_thread(wait_for_log, child, "quiet", timeout=SLACK)
            # The announcement is stored once the deadline moved in the sweeper's index.
            keys = Keys(redis_prefix, shards=stack_settings.stream_shards)
            redis = Redis.from_url(stack_settings.redis_url)
            try:
                deadline = await wait_until(
                    lambda: redis.zscore(keys.last_seen(keys.shard("quiet")), "quiet"),
                    lambda score: score is not None and score > time.time(),
                    within=SLACK,
                    what="the quiet announcement stored",
                    every=0.05,
                )
            finally:
                await redis.aclose()
            child.send(signal.SIGKILL)  # frozen mid-checkpoint: nothing more from it
        finally:
            child.kill_tree()
        quiet_until = datetime.fromtimestamp(float(deadline), UTC)

        # Silence alone convicts the workload outside the window...
        await wait_until(
            lambda: entered(api, "outside", State.UNREACHABLE),
            lambda at: at is not None,
            within=SLACK,
            what="the silent workload outside the window UNREACHABLE",
        )
        # ...but the one inside it only once the window ended and a TTL more passed.
        in_window_at = await wait_until(
            lambda: entered(api, "in-window", State.UNREACHABLE),
            lambda at: at is not None,
            within=(window_end - datetime.now(UTC)).total_seconds() + TTL + SLACK,
            what="the silent workload in the window UNREACHABLE after it",
        )
        assert heard + timedelta(seconds=TTL) < window_end  # silent past a TTL inside it
        assert in_window_at is not None and in_window_at >= window_end + timedelta(seconds=TTL)
        quiet_at = await wait_until(
            lambda: entered(api, "quiet", State.UNREACHABLE),
            lambda at: at is not None,
            within=QUIET_S + TTL + SLACK,
            what="the quiet workload UNREACHABLE after its quiet period",
        )
        assert quiet_at is not None and quiet_at >= quiet_until + timedelta(seconds=TTL)
        history = [t["to"] for t in await api.transitions("quiet")]
        assert history == ["RUNNING", "UNREACHABLE"], history

    # Nothing raised inside the window; once out of it, the UNREACHABLE alert goes out.
    inside = await alert_rows(stack_settings, "in-window")
    assert inside and all(row.created_at >= window_end for row in inside), inside
    assert await alert_rows(stack_settings, "outside")
