"""Each process kind exposes its own metrics on STATUSD_METRICS_PORT, the Prometheus way.

- `serve --workers 2`: one multiprocess group; heartbeats taken by both processes are all counted
  in one scrape of either, and the group's directory is gone once it stops.
- `consume`: its own counters, and no fleet figures (those are the API process kind's only).
- a prefork Celery worker: the task counters of its children on the main process's port.
- `statusd up`: the API and the worker on one host, each on its own metrics port.

Real processes on loopback, PostgreSQL (several processes write at once), bounded waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client.mmap_dict import MmapedDict

from statusd.celery.application import create_celery
from statusd.celery.names import SWEEP_TASK
from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.celery_procs import broker, running_worker
from tests.support.processes import (
    ManagedProcess,
    free_port,
    running_statusd,
    start_statusd,
    stop_process,
    wait_for_http,
)
from tests.support.scrape import free_ports, get, scrape_until, total, value

postgres_only = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
HEARTBEATS = 40
ACCEPTED = "statusd_heartbeats_accepted_total"


def post(url: str, body: dict[str, object], token: str) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # a new connection each time
        return int(response.status)


def per_process(group_dir: Path, kind: str, sample: str) -> dict[int, float]:
    """`sample` as each process of the group wrote it in its own `<kind>_<pid>.db` file (for a
    histogram's `_bucket`: the process's observations, since the files hold plain bucket counts)."""
    found: dict[int, float] = {}
    for path in group_dir.glob(f"{kind}_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        for key, count, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == sample:
                found[pid] = found.get(pid, 0.0) + count
    return found


def wait_for_listeners(parent: int, port: int, count: int, timeout: float = 60.0) -> None:
    """Until `count` children of `parent` listen on `port` (/readyz answers when the first does)."""
    deadline = time.monotonic() + timeout
    listening: set[int] = set()
    while time.monotonic() < deadline:
        listening = set()
        for child in psutil.Process(parent).children():
            with contextlib.suppress(psutil.Error):
                if any(
                    c.status == psutil.CONN_LISTEN and c.laddr.port == port
                    for c in child.net_connections("tcp")
                ):
                    listening.add(child.pid)
        if len(listening) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"only {sorted(listening)} listen on {port} after {timeout}s")


@postgres_only
def test_serve_workers_share_one_scrape_and_consume_has_its_own(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    api_port, serve_metrics, consume_metrics = free_ports(3)
    scratch = tmp_path / "tmp"  # TMPDIR: where the serve group keeps its metrics directory
    scratch.mkdir()
    env = {**settings_env(make_settings(consumer_block_ms=100)), "TMPDIR": str(scratch)}
    api = f"http://127.0.0.1:{api_port}"
    serve_args = ["serve", "--port", str(api_port), "--workers", "2", "--consumers", "0"]
    with (
        running_statusd(
            serve_args,
            env={**env, "STATUSD_METRICS_PORT": str(serve_metrics)},
            ready_url=f"{api}/readyz",
            log_dir=tmp_path,
        ) as serve,
        running_statusd(
            ["consume", "--consumers", "1"],
            env={**env, "STATUSD_METRICS_PORT": str(consume_metrics)},
            log_dir=tmp_path,
        ) as consume,
    ):
        wait_for_http(f"http://127.0.0.1:{consume_metrics}/metrics", proc=consume)
        wait_for_listeners(serve.pid, api_port, 2)  # else the first one takes every heartbeat
        request = urllib.request.Request(
            f"{api}/v1/workloads",
            data=json.dumps({"id": "mp-1", "kind": "training"}).encode(),
            headers={"Authorization": f"Bearer {TEST_API_TOKEN}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as created:
            token = json.loads(created.read())["heartbeat_token"]
        for seq in range(1, HEARTBEATS + 1):
            body = {"workload_id": "mp-1", "status": "RUNNING", "seq": seq}
            assert post(f"{api}/v1/heartbeats", body, token) == 202

        serve_url = f"http://127.0.0.1:{serve_metrics}/metrics"
        for _ in range(6):  # whichever process of the group answers, it counts all of them
            got, _ = scrape_until(serve_url, lambda s: value(s, ACCEPTED) >= HEARTBEATS)
            assert value(got, ACCEPTED) == HEARTBEATS
        group_dir = scratch / f"statusd-metrics-serve-{serve.pid}"
        accepted = per_process(group_dir, "counter", ACCEPTED)
        assert len([n for n in accepted.values() if n > 0]) == 2, accepted
        assert sum(accepted.values()) == HEARTBEATS
        assert get(f"{api}/metrics")[0] == 404  # moved off the public port

        # The consumer applies them; its scrape has its own counters and no fleet figures.
        consumed, _ = scrape_until(
            f"http://127.0.0.1:{consume_metrics}/metrics",
            lambda s: total(s, "statusd_consumer_entries_total") >= HEARTBEATS,
        )
        assert not [k for k in consumed if k[0].startswith(("statusd_stream_", "statusd_outbox"))]
        assert ("statusd_fleet_read_success", (("part", "stream"),)) not in consumed
        # ...which the API process kind reports: the stream is drained.
        fleet, _ = scrape_until(serve_url, lambda s: value(s, "statusd_stream_lag") == 0)
        assert value(fleet, "statusd_workloads", kind="training", state="RUNNING") == 1

        assert stop_process(serve, signal.SIGTERM, timeout=30) == 0
    assert not group_dir.exists()  # the parent removes the group's directory


@postgres_only
def test_prefork_worker_children_counted_on_the_main_process_port(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    secret = "worker-metrics-token-0123456789"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with broker("redis", tmp_path) as broker_url:
        port = free_port()  # after the broker bound its own
        settings = make_settings(broker_url=broker_url, metrics_port=port, metrics_token=secret)
        env = {**settings_env(settings), "TMPDIR": str(scratch)}
        url = f"http://127.0.0.1:{port}/metrics"
        auth = {"Authorization": f"Bearer {secret}"}
        celery = create_celery(settings)
        with running_worker(env, tmp_path, queues="sweep", concurrency=2) as worker:
            scrape_until(url, lambda s: True, headers=auth)  # listening (after the pool started)
            assert get(url)[0] == 401
            for sweeps in (1, 2):  # one after the other: a second at once would skip (sweep lock)
                celery.send_task(SWEEP_TASK, queue="sweep")
                scrape_until(
                    url,
                    lambda s, n=sweeps: value(s, "statusd_sweep_duration_seconds_count") >= n,
                    headers=auth,
                )
            got, _ = scrape_until(url, lambda s: True, headers=auth)
            assert value(got, "statusd_sweep_duration_seconds_count") == 2
            group_dir = scratch / f"statusd-metrics-worker-{worker.pid}"
            observed = per_process(group_dir, "histogram", "statusd_sweep_duration_seconds_bucket")
            # The children ran the sweeps; the main process only serves the scrape.
            assert observed.get(worker.pid, 0.0) == 0
            assert sum(observed.values()) == 2, observed
            assert stop_process(worker, signal.SIGTERM, timeout=30) == 0
        assert not group_dir.exists()
        celery.close()


def two_free_ports() -> int:
    """A port p with p + 1 free as well (for `statusd up`: API metrics on p, the worker's on p+1)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def test_up_gives_the_api_and_the_worker_their_own_metrics_ports(tmp_path: Path) -> None:
    metrics = two_free_ports()
    port = free_port()
    while port in (metrics, metrics + 1):  # not bound yet, so free_port may hand it out again
        port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")}
    env.update(
        STATUSD_STATE_DIR=str(tmp_path / "state"),
        STATUSD_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'statusd.db'}",
        STATUSD_PORT=str(port),
        STATUSD_METRICS_PORT=str(metrics),
        STATUSD_LOG_FORMAT="json",
    )
    proc = start_statusd(["up", "--embedded-redis"], env=env, cwd=tmp_path, log_dir=tmp_path)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", proc=proc, timeout=90)
        with _with_log(proc):
            _scrape_both(metrics)
        assert stop_process(proc, signal.SIGINT, timeout=60) == 0
    finally:
        proc.kill_tree()


@contextlib.contextmanager
def _with_log(proc: ManagedProcess) -> Iterator[None]:
    """A failed wait says what `statusd up` and its children logged."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- statusd up log ---\n{proc.log_tail(8000)}") from None


def _scrape_both(metrics: int) -> None:
    """The API's port has the fleet figures; the port after it, the worker's sweeps."""
    api, _ = scrape_until(
        f"http://127.0.0.1:{metrics}/metrics", lambda s: ("statusd_disruption", ()) in s
    )
    assert value(api, "statusd_fleet_read_success", part="workloads") == 1
    # The worker (beat included) sweeps every STATUSD_SWEEP_INTERVAL: its port shows it.
    worker, _ = scrape_until(
        f"http://127.0.0.1:{metrics + 1}/metrics",
        lambda s: value(s, "statusd_sweep_duration_seconds_count") >= 1,
        timeout=90,
    )
    assert ("statusd_disruption", ()) not in worker  # fleet figures: the API's only
