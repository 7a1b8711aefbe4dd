"""2,000 simulated containers, 20% of them faulty, on this 2-core machine: every final state right.

API + consumers, one `statusd worker` (sweep + poll, 2 processes) and a `statusd beat`, each a
real process; the fleet (2,000 status endpoints on one loopback server, heartbeats in batches)
runs in the test process through the simulator library, exactly as `statusd simulate` does.

The full size (2,000 containers) runs on PostgreSQL with RabbitMQ, the production pair; the
embedded pair (SQLite, Redis as the broker) runs the same faults, the same processes and the same
checks on 500 containers. Both walk their lifecycles for 15 s: the fault timings come from the
settings (TTL, sweep interval, poll and start timeouts), not the fleet's size, and at 15 s each
fault still plays out in full (a flap stays silent for longer than the TTL, a silent, dead, hung or
garbage container stays so for more than twice the TTL before the walk ends); a shorter walk
only packs the fleet's lifecycle steps and faults closer together, more of them per sweep.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from statusd.settings import Settings
from statusd.simulate.control import StatusdAPI
from statusd.simulate.faults import Fault, parse_faults
from statusd.simulate.fleet import Fleet, FleetConfig
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.celery_procs import DEPLOYMENTS, running_beat, running_worker
from tests.support.fleet_api import running_api
from tests.support.processes import all_running

FULL = (2000, 15.0)  # containers, seconds of lifecycle walk: PostgreSQL + RabbitMQ
SHORT = (500, 15.0)  # the embedded pair
FAULTS = "silent=5,dead=4,hang=3,flap=3,garbage=3,slow-start=2"  # 20%


def _sweep_stats(log_dir: Path) -> list[dict[str, float]]:
    """`sweep.done` lines the worker logged (JSON): stale count and duration of each sweep."""
    out = []
    for path in log_dir.rglob("statusd-worker-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"sweep.done"' in line:
                try:
                    out.append(json.loads(line[line.index("{") :]))
                except ValueError:
                    continue
    return out


@pytest.mark.slow
@pytest.mark.scale
@DEPLOYMENTS
async def test_two_thousand_containers_with_twenty_percent_faults(
    make_settings: Callable[..., Settings], deployment_broker: str, tmp_path: Path, redis: Redis
) -> None:
    settings = make_settings(
        broker_url=deployment_broker,
        heartbeat_ttl=3,
        sweep_interval=1,
        poll_timeout=0.5,
        unreachable_after=2,
        lost_after=4,
        start_timeout=3,
        poll_chunk=200,
        consumers=2,
        log_level="INFO",
    )
    env = settings_env(settings)
    full = settings.database_url.startswith("postgresql") and deployment_broker.startswith("amqp")
    count, duration = FULL if full else SHORT
    config = FleetConfig(
        count=count,
        interval=1.0,
        duration=duration,
        faults=parse_faults(FAULTS),
        seed=7,
        settle_timeout=150,
    )
    with all_running(
        running_api(env, tmp_path),
        running_worker(env, tmp_path / "worker", concurrency=2),
        running_beat(env, tmp_path / "beat"),
    ) as (url, *_):
        async with StatusdAPI(url, TEST_API_TOKEN) as api:
            fleet = Fleet(api, config)
            await fleet.start()
            try:
                await fleet.run()
                summary = await fleet.settle()
            finally:
                await fleet.stop()

    by_fault = summary.by_fault()
    assert sum(total for total, _ in by_fault.values()) == count
    assert by_fault[Fault.HEALTHY][0] == count * 80 // 100
    bad = [
        f"{v.container.id} {v.container.kind}/{v.container.fault}: truth {v.truth}, statusd {v.actual}"
        for v in summary.mismatches[:20]
    ]
    assert summary.ok, f"{len(summary.mismatches)} wrong states, e.g.\n" + "\n".join(bad)
    sweeps = _sweep_stats(tmp_path / "worker")
    biggest = max(sweeps, key=lambda s: s["stale"], default=None)
    print(f"settled in {summary.settled_in_s:.1f}s; sweeps={len(sweeps)}; biggest sweep: {biggest}")
