"""GET /metrics: parses with prometheus_client, moves when heartbeats flow, covers the fleet.

Other processes (a Celery worker, a second `serve`) push their counters through Redis; one scrape
sums them, and a process that went away keeps its counts (folded into the retired totals).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from statusd.app_keys import RUNTIME
from statusd.oncall.metrics_fleet import local_pusher_id
from statusd.settings import Settings
from tests.conftest import settings_env
from tests.support.api_client import api_client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        yield c


async def scrape(
    client: TestClient[Any, Any],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics", headers={"Authorization": ""})  # no auth needed
    assert resp.status == 200 and resp.content_type == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_when_heartbeats_flow(client: TestClient[Any, Any]) -> None:
    before = await scrape(client)
    for name in ("statusd_stream_length", "statusd_stream_lag", "statusd_stream_pending"):
        assert (name, ()) in before, name
    assert ("statusd_outbox_depth", (("target", "main"),)) in before
    assert ("statusd_celery_queue_depth", (("queue", "poll"),)) in before

    created = await client.post("/v1/workloads", json={"id": "m1", "kind": "training"})
    assert created.status == 201, await created.text()
    token = (await created.json())["heartbeat_token"]
    for seq, status in enumerate(("STARTING", "RUNNING", "RUNNING"), start=1):
        resp = await client.post(
            "/v1/heartbeats",
            json={"workload_id": "m1", "status": status, "seq": seq},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 202, await resp.text()
    rejected = await client.post(
        "/v1/heartbeats",
        json={"workload_id": "m1", "status": "RUNNING", "seq": 9},
        headers={"Authorization": "Bearer forged"},
    )
    assert rejected.status == 401
    # A backend-driven change goes through apply_observation: the transitions counter moves too.
    moved = await client.post(
        "/v1/workloads/m1/transitions", json={"to": "STOPPING", "reason": "user"}
    )
    assert moved.status in (200, 201), await moved.text()

    after = await scrape(client)
    accepted = "statusd_heartbeats_accepted_total"
    assert value(after, accepted) - value(before, accepted) == 3
    assert sum(v for (n, _), v in after.items() if n == "statusd_heartbeats_rejected_total") > sum(
        v for (n, _), v in before.items() if n == "statusd_heartbeats_rejected_total"
    )
    assert value(after, "statusd_stream_length") >= 3  # nobody consumes (consumers=0)
    # Nothing consumes (consumers=0): every appended heartbeat is still undelivered.
    assert value(after, "statusd_stream_lag") >= 3
    assert (
        value(
            after,
            "statusd_transitions_total",
            kind="training",
            from_state="PENDING",
            to_state="STOPPING",
            source="api",
        )
        - value(
            before,
            "statusd_transitions_total",
            kind="training",
            from_state="PENDING",
            to_state="STOPPING",
            source="api",
        )
        == 1
    )
    assert value(after, "statusd_outbox_depth", target="main") >= 1
    latency = [k for k in after if k[0] == "statusd_ingest_latency_seconds_count"]
    assert latency and sum(after[k] for k in latency) >= 4


PUSHER = textwrap.dedent(
    """
    import asyncio
    from statusd import metrics
    from statusd.runtime import open_runtime
    from statusd.settings import Settings

    async def main() -> None:
        rt = await open_runtime(Settings())
        metrics.HEARTBEATS_ACCEPTED.inc(7)
        metrics.POLLS.labels(outcome="fleet-test").inc(3)
        await rt.close()  # the final push

    asyncio.run(main())
    """
)


async def test_one_scrape_sums_other_processes_and_keeps_counts_of_dead_ones(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    before = await scrape(client)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", PUSHER],
        env=settings_env(settings),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()

    after = await scrape(client)
    assert (
        value(after, "statusd_heartbeats_accepted_total")
        - value(before, "statusd_heartbeats_accepted_total")
        == 7
    )
    assert value(after, "statusd_polls_total", outcome="fleet-test") == 3

    # The other process is gone: age its last push past the liveness window; the next scrape
    # folds its counters into the retired totals, so the fleet sum does not go backward.
    rt = client.server.app[RUNTIME]
    own = local_pusher_id(rt.keys)
    others = [
        p.decode()
        for p in await rt.redis.zrange(rt.keys.metrics_processes, 0, -1)
        if p.decode() != own
    ]
    assert len(others) == 1  # the subprocess
    await rt.redis.zadd(rt.keys.metrics_processes, {others[0]: time.time() - 3600})
    retired = await scrape(client)
    assert value(retired, "statusd_polls_total", outcome="fleet-test") == 3
    assert value(retired, "statusd_heartbeats_accepted_total") == value(
        after, "statusd_heartbeats_accepted_total"
    )
    assert await rt.redis.zscore(rt.keys.metrics_processes, others[0]) is None
    assert not await rt.redis.exists(rt.keys.metrics_process(others[0]))
    again = await scrape(client)  # folded exactly once
    assert value(again, "statusd_polls_total", outcome="fleet-test") == 3
