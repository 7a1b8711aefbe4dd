"""Server-paced heartbeats: with STATUSD_MAX_HEARTBEATS_PER_S=1000 and 10,000 simulated workloads
obeying `next_heartbeat_s`, the aggregate rate stays under 1,100/s and nobody is stale for obeying
(the interval they are told, 10 s, is far above STATUSD_HEARTBEAT_TTL=3). The rate is measured
over one and a half told intervals.

A real `statusd serve`-like API process with its consumers; the fleet (the simulator library, as
`statusd simulate` runs it) in the test process. Pacing does not depend on the database: SQLite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from statusd.settings import Settings
from statusd.simulate.control import StatusdAPI
from statusd.simulate.fleet import Fleet, FleetConfig
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.api_client import bearer
from tests.support.fleet_api import running_api
from tests.support.fleet_wait import wait_until

COUNT, CAP, TTL = 10_000, 1000, 3.0
TOLD = COUNT / CAP  # 10 s
WINDOW_S = 1.5 * TOLD  # measured after the fleet has spread over the told interval


@pytest.mark.slow
@pytest.mark.scale
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_ten_thousand_obeying_workloads_stay_under_the_cap(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        heartbeat_ttl=TTL, max_heartbeats_per_s=CAP, consumers=2, log_level="WARNING"
    )
    # A lifecycle walk of an hour: no state changes (which are sent at once) within the test.
    config = FleetConfig(count=COUNT, interval=TTL / 3, duration=3600.0, seed=3)
    with running_api(settings_env(settings), tmp_path) as url:
        async with StatusdAPI(url, TEST_API_TOKEN, concurrency=64) as api:
            fleet = Fleet(api, config)
            await fleet.start()
            try:

                async def told() -> float | None:
                    return api.next_heartbeat_s

                await wait_until(
                    told,
                    lambda interval: interval == TOLD,
                    within=60,
                    what="the fleet told to pace itself",
                )
                await asyncio.sleep(2)  # the told fleet's first beats, spread over 10 s, begin
                sent, started = fleet.sent_heartbeats, time.monotonic()
                await asyncio.sleep(WINDOW_S)
                rate = (fleet.sent_heartbeats - sent) / (time.monotonic() - started)
                print(f"aggregate heartbeat rate over {WINDOW_S:g}s: {rate:.1f}/s")
                assert 0 < rate < CAP * 1.1, rate

                # Nobody is stale for obeying: told 10 s with a 3 s TTL, judged by the told pace.
                async with api.session.get(
                    f"{url}/v1/reports/stale",
                    params={"label": f"sim-run:{config.run_id}"},
                    headers=bearer(TEST_API_TOKEN),
                ) as resp:
                    report = await resp.json()
                assert resp.status == 200 and report["count"] == 0, report
                shown = await api.states(fleet.label)
                assert len(shown) == COUNT
            finally:
                await fleet.stop()
