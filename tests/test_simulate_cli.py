"""`statusd simulate` as operators run it: a real subprocess against a real stack; exit codes."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis

from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.celery_procs import broker, running_beat, running_worker
from tests.support.fleet_api import running_api
from tests.support.processes import all_running, start_statusd, stop_process


def test_bad_fault_spec_exits_2_naming_the_problem(settings: Settings, tmp_path: Path) -> None:
    proc = start_statusd(
        ["simulate", "--faults", "zombie=10", "--api-token", "x" * 20],
        env=settings_env(settings),
        log_dir=tmp_path,
    )
    try:
        assert proc.wait(60) == 2
        assert "zombie" in proc.log_tail()
    finally:
        proc.kill_tree()


async def test_simulate_against_a_running_stack_exits_0_when_statusd_agrees(
    make_settings: Callable[..., Settings], tmp_path: Path, redis: Redis
) -> None:
    with broker("redis", tmp_path) as broker_url:
        settings = make_settings(
            broker_url=broker_url,
            heartbeat_ttl=1,
            sweep_interval=0.5,
            poll_timeout=0.5,
            lost_after=2,
            start_timeout=2,
            consumers=1,
            consumer_block_ms=100,
        )
        env = settings_env(settings)
        with all_running(
            running_api(env, tmp_path),
            running_worker(env, tmp_path / "worker"),
            running_beat(env, tmp_path / "beat"),
        ) as (url, *_):
            proc = start_statusd(
                [
                    "simulate",
                    "--count",
                    "60",
                    "--duration",
                    "10",
                    "--interval",
                    "0.5",
                    "--faults",
                    "silent=10,dead=10,hang=5,flap=10,garbage=5,slow-start=10",
                    "--seed",
                    "3",
                    "--settle-timeout",
                    "90",
                    "--api-url",
                    url,
                    "--api-token",
                    TEST_API_TOKEN,
                ],
                env=env,
                log_dir=tmp_path,
            )
            try:
                code = proc.wait(180)
            except subprocess.TimeoutExpired:
                stop_process(proc, timeout=10)
                raise
            finally:
                proc.kill_tree()
    log = proc.log_tail(20_000)
    assert code == 0, log
    assert "all states correct" in log and "silent" in log and "dead" in log
