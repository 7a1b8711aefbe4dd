"""GET /metrics of the API process: parses with prometheus_client, moves when heartbeats flow,
and carries the fleet-wide figures read from Redis and the database at scrape time, right against
a known state; STATUSD_METRICS_PORT moves it off the API port and STATUSD_METRICS_TOKEN guards it.

(Process groups, the Celery worker and `consume`: test_metrics_process_groups.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from sqlalchemy import func, select

from statusd.app_keys import RUNTIME
from statusd.celery.application import create_celery
from statusd.celery.names import POLL_TASK
from statusd.db import reading
from statusd.models import OutboxEntry, OutboxStatus
from statusd.selfwatch import DisruptionMode, record_sweep_success, write_disruption
from statusd.settings import Settings
from tests.support.api_client import api_client, bearer
from tests.support.celery_procs import broker, rabbitmq_vhost, require_rabbitmq
from tests.support.processes import free_port
from tests.support.scrape import Samples, parse, value


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        yield c


async def scrape(client: TestClient[Any, Any]) -> Samples:
    resp = await client.get("/metrics", headers={"Authorization": ""})  # no token configured
    assert resp.status == 200 and resp.content_type == "text/plain"
    return parse(await resp.text())


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


OUTBOX = OutboxEntry.__table__  # type: ignore[attr-defined]


async def register(client: TestClient[Any, Any], wid: str, kind: str) -> str:
    created = await client.post("/v1/workloads", json={"id": wid, "kind": kind})
    assert created.status == 201, await created.text()
    return str((await created.json())["heartbeat_token"])


@pytest.fixture
def broker_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own as the Celery broker, so queue depths are known exactly."""
    with broker("redis", tmp_path) as url:
        yield url


async def test_fleet_figures_match_a_known_state(
    make_settings: Callable[..., Settings], broker_redis: str
) -> None:
    settings = make_settings(broker_url=broker_redis)
    async with api_client(settings) as client:
        rt = client.server.app[RUNTIME]
        never_swept = await scrape(client)
        assert ("statusd_sweep_last_success_timestamp_seconds", ()) not in never_swept
        assert value(never_swept, "statusd_disruption") == 0

        token = await register(client, "t1", "training")
        await register(client, "t2", "training")
        await register(client, "n1", "notebook")
        await register(client, "d1", "deployment")
        await register(client, "gone", "training")
        assert (await client.delete("/v1/workloads/gone")).status == 200
        moved = await client.post(
            "/v1/workloads/t2/transitions", json={"to": "STOPPING", "reason": "user"}
        )
        assert moved.status in (200, 201), await moved.text()
        for seq in (1, 2):
            sent = await client.post(
                "/v1/heartbeats",
                json={"workload_id": "t1", "status": "STARTING", "seq": seq},
                headers=bearer(token),
            )
            assert sent.status == 202, await sent.text()
        await record_sweep_success(rt.redis, rt.keys, 1_700_000_000.5)
        await write_disruption(rt.redis, rt.keys, DisruptionMode(True, 1_700_000_000.0, 9, 10))
        broker = Redis.from_url(broker_redis)
        try:
            await broker.lpush("poll", "m1", "m2")
            await broker.lpush("sync", "m3")
        finally:
            await broker.aclose()
        async with reading(rt.engine) as conn:
            pending = dict(
                (
                    await conn.execute(
                        select(OUTBOX.c.target, func.count())
                        .where(OUTBOX.c.status == OutboxStatus.PENDING)
                        .group_by(OUTBOX.c.target)
                    )
                ).all()
            )

        got = await scrape(client)
        workloads = {
            (dict(labels)["kind"], dict(labels)["state"]): v
            for (name, labels), v in got.items()
            if name == "statusd_workloads"
        }
        nonzero = {key: v for key, v in workloads.items() if v}
        # Deleted workloads are not tracked; every state of each kind's table has a series.
        assert nonzero == {
            ("training", "PENDING"): 1,
            ("training", "STOPPING"): 1,
            ("notebook", "PENDING"): 1,
            ("deployment", "PENDING"): 1,
        }
        assert {kind for kind, _ in workloads} == {"training", "notebook", "deployment"}
        assert ("training", "RUNNING") in workloads
        assert value(got, "statusd_stream_length") == 2  # nobody consumes (consumers=0)
        assert value(got, "statusd_stream_lag") == 2
        assert value(got, "statusd_stream_pending") == 0
        assert value(got, "statusd_celery_queue_depth", queue="poll") == 2
        assert value(got, "statusd_celery_queue_depth", queue="sync") == 1
        assert value(got, "statusd_celery_queue_depth", queue="sweep") == 0
        assert pending.get("main", 0) >= 1
        for target in ("main", "alert"):
            assert value(got, "statusd_outbox_depth", target=target) == pending.get(target, 0)
        assert value(got, "statusd_outbox_oldest_age_seconds", target="main") >= 0
        assert value(got, "statusd_sweep_last_success_timestamp_seconds") == 1_700_000_000.5
        assert value(got, "statusd_disruption") == 1
        for part in ("stream", "outbox", "queues", "workloads", "selfwatch"):
            assert value(got, "statusd_fleet_read_success", part=part) == 1, part

        # Read at scrape time: the next scrape follows the state at once (no push interval).
        await write_disruption(rt.redis, rt.keys, DisruptionMode())
        assert (await client.delete("/v1/workloads/n1")).status == 200
        later = await scrape(client)
        assert value(later, "statusd_disruption") == 0
        assert value(later, "statusd_workloads", kind="notebook", state="PENDING") == 0


async def test_an_unreadable_part_is_left_out_and_flagged(
    make_settings: Callable[..., Settings],
) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with api_client(make_settings(broker_url=dead_broker)) as client:
        got = await scrape(client)
    assert value(got, "statusd_fleet_read_success", part="queues") == 0
    assert not [k for k in got if k[0] == "statusd_celery_queue_depth"]
    # The rest of the scrape is whole.
    assert value(got, "statusd_fleet_read_success", part="workloads") == 1
    assert ("statusd_stream_lag", ()) in got


async def test_metrics_port_moves_metrics_off_the_api_port_behind_a_token(
    make_settings: Callable[..., Settings],
) -> None:
    port, secret = free_port(), "metrics-token-for-the-test-0123"
    settings = make_settings(metrics_port=port, metrics_token=secret)
    async with api_client(settings) as client:
        on_api_port = await client.get("/metrics", headers={"Authorization": ""})
        assert on_api_port.status == 404  # tenant containers reach this port: no fleet figures
        url = f"http://127.0.0.1:{port}/metrics"
        async with ClientSession() as session:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": secret}):
                async with session.get(url, headers=headers) as refused:
                    assert refused.status == 401, headers
                    assert (await refused.json())["error"] == "unauthorized"
                    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            async with session.get(url, headers={"Authorization": f"Bearer {secret}"}) as ok:
                assert ok.status == 200
                assert ok.content_type == "text/plain"
                got = parse(await ok.text())
            async with session.get(f"http://127.0.0.1:{port}/v1/workloads") as other:
                assert other.status == 404  # only /metrics on the metrics port
    assert ("statusd_stream_lag", ()) in got  # the API process kind carries the fleet figures
    assert value(got, "statusd_fleet_read_success", part="workloads") == 1
    assert ("statusd_heartbeats_accepted_total", ()) in got


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_queue_depths_on_a_rabbitmq_broker(make_settings: Callable[..., Settings]) -> None:
    require_rabbitmq()
    with rabbitmq_vhost() as amqp_url:
        settings = make_settings(broker_url=amqp_url)
        celery = create_celery(settings)
        try:
            for _ in range(3):  # nobody consumes: they wait in `poll` (declared by the send)
                await asyncio.to_thread(
                    celery.send_task, POLL_TASK, args=[[], "no-token"], queue="poll"
                )
        finally:
            celery.close()
        async with api_client(settings) as client:
            got = await scrape(client)
    assert value(got, "statusd_fleet_read_success", part="queues") == 1
    assert value(got, "statusd_celery_queue_depth", queue="poll") == 3
    # Not declared yet on this vhost: 0, not an error.
    assert ("statusd_celery_queue_depth", (("queue", "sweep"),)) in got
    assert value(got, "statusd_celery_queue_depth", queue="sweep") == 0
