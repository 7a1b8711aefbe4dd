"""Chaos run: a whole statusd deployment under a seeded random fault schedule, checked by an oracle.

    .venv/bin/python bench/chaos.py --seed 7 --duration 150      (make chaos SEED=7 DURATION=150)
    .venv/bin/python bench/chaos.py --seed 7 --containers 200 --faults redis_restart,db_down --keep

The deployment, all on loopback: two `serve`, two `consume`, a `worker` (sweep, poll, sync), two
`beat` (one leader), a data Redis with AOF, a broker Redis, a PostgreSQL primary and its
synchronous streaming replica of the run's own (bench/chaos_pg.py, from the installed server
binaries, on free ports, statusd given the multi-host URL of both; without them a fresh database
on the server at STATUSD_CHAOS_PG, which is then never restarted), a main API that records what
it receives, an alert receiver (STATUSD_ALERT_WEBHOOKS) that records every alert, and a fleet of
simulated containers whose truth the harness scripts and records: alive throughout (some
flipping READY <-> DEGRADED), finishing (STOPPING, STOPPED), dying (silent from a known moment).

The nemesis draws from the seed, every 5-10 s, each held 1-8 s, several overlapping (FAULT_KINDS):
SIGKILL of any statusd process (restarted after the hold, as an orchestrator would),
SIGSTOP/SIGCONT, the data Redis SIGKILLed and restarted with its AOF or with its data gone,
PostgreSQL's primary crashed (pg_ctl stop -m immediate) and restarted, or failed over to its
replica (promoted; the old primary rebuilt as the new replica), the database refusing connections
(ALLOW_CONNECTIONS false, sessions terminated), the main API and the alert receiver answering 503,
hanging or answering slowly, delay or loss on statusd's links to Redis and PostgreSQL (a
userspace proxy, bench/chaos_proxy.py: this kernel has no tc netem), and a network partition of
one `serve`, one `consume` or the `worker` from Redis and PostgreSQL (those three run in network
namespaces of the run's own when the run draws partitions, bench/chaos_netns.py; needs root).
The same seed replays the same schedule and fleet (the proxy's loss pattern and the machine's
timing are not replayed).

After the faults stop and a settle time, the oracle reads only what an outsider sees (the
harness's records, the main API's and the alert receiver's logs, the public API, the processes'
logs) and checks:
- every workload's pushed history is a subsequence of what it sent and statusd accepted (202),
  in seq order, nothing applied twice;
- every change of state statusd accepted is in that history (none lost: a failover included),
  except reports Redis may have lost with its data;
- the main API received every transition of that history, once per transition, in per-workload
  order (an idempotent re-send of the same Idempotency-Key is counted, not a fault);
- every container's true final state is statusd's: alive ones their last report, finished ones
  STOPPED, dead ones UNREACHABLE or LOST;
- no UNREACHABLE or LOST ever for a container that was alive throughout;
- at most one alert per real incident (one `unreachable`, one `lost` per death), none for a
  container alive throughout;
- every death detected within the documented bound (DETECTION_BOUND_S) plus only the time faults
  kept statusd from hearing or sweeping, with their documented recovery (RECOVERY_S);
- every statusd process is running at the end, and no log holds a traceback.
Exit status 1 when a check fails; the JSON summary (seed, faults, checks) goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chaos_netns  # noqa: E402
from chaos_pg import PgPair, server_bindir  # noqa: E402
from statusd_client.heartbeater import DEFAULT_TIMEOUT_S as CLIENT_TIMEOUT_S  # noqa: E402

from statusd.redis_runtime import EmbeddedRedis, free_port  # noqa: E402

SECRET = "chaos-secret-" + "s" * 32
API_TOKEN = "chaos-api-token-" + "t" * 32
MAIN_TOKEN = "chaos-main-token-" + "m" * 32
PG = os.environ.get("STATUSD_CHAOS_PG", "postgresql://postgres@127.0.0.1:5432/test")
HEARTBEAT_TTL_S = 15.0
BEAT_S = 5.0  # each container's heartbeat period (well inside the TTL)
LOST_AFTER_S = 40.0
FAULT_GAP_S = (5.0, 10.0)
QUIET_START_S = 15.0  # the fleet registers and settles before the first fault
SWEEP_INTERVAL_S = 2.0
POLL_TIMEOUT_S = 2.0  # statusd's default
# The documented detection bound (docs/reliability.md): a container that falls silent is
# UNREACHABLE (it has no status_url: no poll to wait for) within the silence allowed (its paced
# interval TTL/3 + 2/3 TTL = the TTL), one sweep interval and one poll timeout of its last
# accepted heartbeat, plus only the time faults kept statusd from hearing or sweeping.
DETECTION_BOUND_S = HEARTBEAT_TTL_S + SWEEP_INTERVAL_S + POLL_TIMEOUT_S
# After a fault that kept statusd from hearing or sweeping is undone, the documented recovery:
# Redis back -> ingest deaf for the startup grace (= TTL) and a cut-off poll's leases expire
# within their TTL (statusd.celery.budgets.POLL_LEASE_MIN_S), then one sweep interval; the
# database back or a worker resumed -> the next sweep; a worker or beat restarted -> its start
# (a Celery worker's boot on a loaded machine) and the next sweep; the beat leader gone -> the
# standby takes over within its lease.
BEAT_LEASE_S = 3.0
PROCESS_START_S = 15.0
POLL_LEASE_S = 20.0
RECOVERY_S = {
    "redis": max(HEARTBEAT_TTL_S, POLL_LEASE_S) + SWEEP_INTERVAL_S,
    "database": 2 * SWEEP_INTERVAL_S + POLL_TIMEOUT_S,
    "resumed": 2 * SWEEP_INTERVAL_S,
    "restarted": PROCESS_START_S + BEAT_LEASE_S + SWEEP_INTERVAL_S,
    "ingest": HEARTBEAT_TTL_S + SWEEP_INTERVAL_S,
    "network": 2 * SWEEP_INTERVAL_S + POLL_TIMEOUT_S,
    # The worker cut off by a partition: after the heal its stalled connections resume at TCP's
    # next retransmission, which exponential backoff puts at most one hold (the longest, 16 s)
    # later, or they time out and reconnect sooner; then two sweeps and a poll timeout.
    "partitioned": 16.0 + 2 * SWEEP_INTERVAL_S + POLL_TIMEOUT_S,
}
FINAL = "STOPPED"
DEAD = {"UNREACHABLE", "LOST"}
STATUSD = str(Path(sys.executable).with_name("statusd"))


# -- the deployment ----------------------------------------------------------------------------


@dataclass
class Proc:
    """One statusd process, restartable with the same command, its output appended to one log."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    stopped: bool = False  # SIGSTOPped by the nemesis
    prefix: list[str] = field(default_factory=list)  # `ip netns exec <ns>` for a namespaced one

    def start(self) -> None:
        if self.alive():
            return  # two overlapping faults on one process: the first restart wins
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [*self.prefix, STATUSD, *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)


SLOW_ANSWER_S = 4.0  # a slow peer's answer: within statusd's send timeouts, but not by much


class MainAPI:
    """The loopback main API: records every PUT; the nemesis makes it answer 503, hang or answer
    slowly."""

    def __init__(self) -> None:
        self.received: list[tuple[str, int, str, float]] = []  # wid, transition id, key, time
        self.mode = "ok"
        self.port = free_port()
        self.hosts = ["127.0.0.1"]  # and the namespaces' bridge address, in a partition run
        self.runner: web.AppRunner | None = None

    async def put(self, request: web.Request) -> web.Response:
        if self.mode == "503":
            return web.json_response({"error": "chaos"}, status=503)
        body = await request.json()
        key = request.headers.get("Idempotency-Key", "")
        # Recorded on arrival: a hung answer still means the main database took the change.
        self.received.append(
            (request.match_info["id"], int(body["transition_id"]), key, time.monotonic())
        )
        if self.mode == "hang":
            await asyncio.sleep(30)
        elif self.mode == "slow":
            await asyncio.sleep(SLOW_ANSWER_S)
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/workloads/{id}/status", self.put)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        for host in self.hosts:
            await web.TCPSite(self.runner, host, self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class AlertReceiver(MainAPI):
    """The loopback alert webhook (STATUSD_ALERT_WEBHOOKS): records every alert on arrival; the
    nemesis makes it answer 503, hang or answer slowly."""

    def __init__(self) -> None:
        super().__init__()
        self.alerts: list[dict[str, Any]] = []

    async def post(self, request: web.Request) -> web.Response:
        if self.mode == "503":
            return web.json_response({"error": "chaos"}, status=503)
        self.alerts.append({**await request.json(), "received_at": time.time()})
        if self.mode == "hang":
            await asyncio.sleep(30)
        elif self.mode == "slow":
            await asyncio.sleep(SLOW_ANSWER_S)
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self.post)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        for host in self.hosts:
            await web.TCPSite(self.runner, host, self.port).start()


class Links:
    """bench/chaos_proxy.py as a child process: statusd's links to Redis and PostgreSQL, with
    delay and loss on command. Without proxy faults in the run, statusd connects directly."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.child: subprocess.Popen[str] | None = None
        self.redis_port = self.pg_port = 0
        self.pg_ports: list[int] = []  # every PostgreSQL node's, the primary's and its replica's

    def start(self, redis_port: int, pg_port: int, *more_pg_ports: int) -> None:
        self.redis_port, self.pg_port = redis_port, pg_port
        self.pg_ports = [pg_port, *more_pg_ports]
        if not self.enabled:
            return
        self.child = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("chaos_proxy.py")),
                str(redis_port),
                *map(str, self.pg_ports),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.child.stdout is not None
        self.redis_port, *self.pg_ports = json.loads(self.child.stdout.readline())["ports"]
        self.pg_port = self.pg_ports[0]

    def command(self, line: str) -> None:
        assert self.child is not None and self.child.stdin is not None
        self.child.stdin.write(line + "\n")
        self.child.stdin.flush()

    def stop(self) -> None:
        if self.child is None:
            return
        assert self.child.stdin is not None
        self.child.stdin.close()
        try:
            self.child.wait(10)
        except subprocess.TimeoutExpired:
            self.child.kill()


class Deployment:
    def __init__(self, work: Path, seed: int, kinds: list[str]) -> None:
        self.work = work
        self.redis = EmbeddedRedis(data_dir=work / "redis", appendonly=True)
        self.broker = EmbeddedRedis(data_dir=work / "broker", appendonly=True)
        self.database = f"statusd_chaos_{seed}_{uuid.uuid4().hex[:6]}"
        self.ports = [free_port(), free_port()]
        self.main_api = MainAPI()
        self.alerts = AlertReceiver()
        self.procs: list[Proc] = []
        # A PostgreSQL of the run's own when the server binaries are there, a primary and its
        # synchronous replica (the nemesis may crash it or fail it over); else the shared one,
        # only ever made unreachable for the run's database.
        bindir = server_bindir()
        self.pg = PgPair(work / "pg", bindir, (free_port(), free_port())) if bindir else None
        # statusd reaches Redis and PostgreSQL through these (delay, loss); the harness directly.
        self.links = Links(any(k.startswith("proxy_") for k in kinds))
        # Some processes in network namespaces of the run's own, when it draws partitions (with
        # its own PostgreSQL: the shared one listens on loopback only).
        self.net = chaos_netns.Network() if "partition" in kinds and self.pg else None

    @property
    def apis(self) -> list[str]:
        """The serves as the fleet reaches them (a namespaced one at its front link's address)."""
        hosts = [self.ns(f"serve{i}").front if self.ns(f"serve{i}") else None for i in range(2)]
        return [f"http://{h or '127.0.0.1'}:{p}" for h, p in zip(hosts, self.ports, strict=True)]

    def ns(self, name: str) -> chaos_netns.Namespace | None:
        return self.net.namespaces.get(name) if self.net else None

    def ns_env(self, env: dict[str, str]) -> dict[str, str]:
        """A namespaced process reaches every peer at the bridge's address (and Redis and
        PostgreSQL directly: the proxy listens on loopback only)."""
        assert self.net is not None
        assert self.pg is not None
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.pg.ports)
        moved = {
            **env,
            "STATUSD_REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0",
            "STATUSD_DATABASE_URL": f"postgresql://postgres@{hosts}/{self.database}",
        }
        return {k: v.replace("127.0.0.1", self.net.host) for k, v in moved.items()}

    @property
    def admin_url(self) -> str:
        return self.pg.admin_url if self.pg else PG

    @property
    def database_url(self) -> str:
        # Every node, in libpq's multi-host form: statusd connects to whichever accepts writes.
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.links.pg_ports)
        return f"postgresql://postgres@{hosts}/{self.database}"

    async def admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")},
            "STATUSD_SECRET": SECRET,
            "STATUSD_API_TOKEN": API_TOKEN,
            "STATUSD_REDIS_URL": f"redis://127.0.0.1:{self.links.redis_port}/0",
            "STATUSD_BROKER_URL": f"redis://127.0.0.1:{self.broker.port}/0",
            "STATUSD_REDIS_PREFIX": "chaos:",
            "STATUSD_DATABASE_URL": self.database_url,
            "STATUSD_STATE_DIR": str(self.work / "state"),
            "STATUSD_LOG_FORMAT": "json",
            "STATUSD_LOG_LEVEL": "WARNING",
            "STATUSD_HEARTBEAT_TTL": str(HEARTBEAT_TTL_S),
            "STATUSD_LOST_AFTER": str(LOST_AFTER_S),
            "STATUSD_SWEEP_INTERVAL": str(SWEEP_INTERVAL_S),
            "STATUSD_POLL_TIMEOUT": str(POLL_TIMEOUT_S),
            "STATUSD_ALERT_WEBHOOKS": f"http://127.0.0.1:{self.alerts.port}/alerts",
            "STATUSD_SYNC_INTERVAL": "2",
            "STATUSD_START_TIMEOUT": "60",
            "STATUSD_MAIN_API_URL": f"http://127.0.0.1:{self.main_api.port}",
            "STATUSD_MAIN_API_TOKEN": MAIN_TOKEN,
            "STATUSD_SHARD_LEASE_MS": "3000",
            "STATUSD_BEAT_LEASE_MS": "3000",
        }

    async def start(self) -> None:
        if self.net is not None:
            await asyncio.to_thread(self.net.open, list(PARTITIONED), {"serve1"})
            self.redis.bind = self.broker.bind = ("127.0.0.1", self.net.host)
            self.main_api.hosts.append(self.net.host)
            self.alerts.hosts.append(self.net.host)
        self.redis.start()
        self.broker.start()
        if self.pg is not None:
            await asyncio.to_thread(self.pg.init)
            if self.net is not None:
                chaos_netns.admit_postgres(self.pg.primary.data, self.net.host, self.net.cidr)
            await asyncio.to_thread(self.pg.start)
        pg_ports = self.pg.ports if self.pg else [int(PG.rsplit(":", 1)[1].split("/")[0])]
        self.links.start(self.redis.port, *pg_ports)
        await self.main_api.start()
        await self.alerts.start()
        await self.admin(f'CREATE DATABASE "{self.database}"')
        env = self.env()
        migrate = await asyncio.to_thread(
            subprocess.run,
            [STATUSD, "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrate failed: {migrate.stdout}{migrate.stderr}")
        logs = self.work / "logs"
        logs.mkdir()
        commands = [
            (f"serve{i}", ["serve", "--port", str(port), "--consumers", "0"])
            for i, port in enumerate(self.ports)
        ]
        commands += [(f"consume{i}", ["consume", "--consumers", "2"]) for i in range(2)]
        commands += [("worker", ["worker", "--concurrency", "2"])]
        # Each beat its own schedule file, as each replica has its own disk: two beats writing one
        # shelve corrupt it ("pickle data was truncated" in the one that reads it next).
        commands += [
            (f"beat{i}", ["beat", "--schedule", str(self.work / f"beat{i}-schedule")])
            for i in range(2)
        ]
        for name, args in commands:
            proc = Proc(name, args, env, logs / f"{name}.log")
            if ns := self.ns(name):
                proc.env, proc.prefix = self.ns_env(env), ns.command([])
                if name.startswith("serve"):  # the namespace's own addresses only
                    proc.args = [*args, "--host", "0.0.0.0"]
            proc.start()
            self.procs.append(proc)
        async with aiohttp.ClientSession() as session:
            for api in self.apis:
                await _wait_ready(session, f"{api}/readyz")

    async def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        await self.main_api.stop()
        await self.alerts.stop()
        self.links.stop()
        self.redis.stop()
        self.broker.stop()
        self.close_network()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.pg.stop)
            return
        with contextlib.suppress(Exception):
            await self.admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def close_network(self) -> None:
        if self.net is not None:
            self.net.close()


async def _wait_ready(session: aiohttp.ClientSession, url: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {within}s")


# -- the fleet -----------------------------------------------------------------------------------


@dataclass
class Container:
    """A simulated container: its script (drawn from the seed) and what statusd accepted."""

    wid: str
    role: str  # steady, flapping, finishing, dying
    event_at: float  # finishing / dying: seconds into the run
    token: str = ""
    accepted: list[tuple[int, str]] = field(default_factory=list)  # (seq, status) answered 202
    last_accepted_at: float = 0.0  # unix time of the last 202: a dying container's death
    accepted_at: list[float] = field(default_factory=list)  # unix time of every 202
    # The longest a sleep between two heartbeats overran (the harness's own loop starved by the
    # machine's load): silence statusd heard, which no fault of statusd's caused.
    late_s: float = 0.0
    seq: int = 0
    state: str = "READY"

    def truth(self) -> set[str]:
        """The states statusd may show at the end."""
        if self.role == "finishing":
            return {FINAL}
        if self.role == "dying":
            return DEAD
        return {self.accepted[-1][1]} if self.accepted else {"READY"}


async def run_container(
    session: aiohttp.ClientSession,
    c: Container,
    rng: random.Random,
    apis: list[str],
    start: float,
    calm_at: float,
    done: asyncio.Event,
    stats: Counter[str],
) -> None:
    """Heartbeat as scripted until `done` (set once the oracle has read statusd); from `calm_at`
    on (faults over) no more changes, so the truth the oracle compares with is settled."""
    await asyncio.sleep(rng.uniform(0, BEAT_S))
    plan: list[str] = []
    while not done.is_set():
        now = time.monotonic() - start
        if c.role == "dying" and now >= c.event_at:
            return  # silent from here on: the truth is "dead since event_at"
        if c.role == "finishing" and now >= c.event_at and not plan:
            plan = ["STOPPING", FINAL]
        if plan:
            c.state = plan[0]
        elif time.monotonic() < calm_at and (c.role == "flapping" or rng.random() < 0.05):
            c.state = "DEGRADED" if c.state == "READY" else "READY"
        c.seq += 1
        sent = await _send(session, apis, c, done, stats)
        if plan and sent:
            plan.pop(0)
            if not plan:
                return  # finished: a final state needs no more heartbeats
        pause = BEAT_S * rng.uniform(0.8, 1.0)
        slept_from = time.monotonic()
        await asyncio.sleep(pause)
        c.late_s = max(c.late_s, time.monotonic() - slept_from - pause)


async def _send(
    session: aiohttp.ClientSession,
    apis: list[str],
    c: Container,
    done: asyncio.Event,
    stats: Counter[str],
) -> bool:
    """One report, retried (as statusd-client does) until accepted or the run ends; each try
    goes to the next `serve`, as through a load balancer."""
    body = {"workload_id": c.wid, "status": c.state, "seq": c.seq, "detail": f"{c.state}@{c.seq}"}
    headers = {"Authorization": f"Bearer {c.token}"}
    attempt = c.seq
    while not done.is_set():
        api = apis[attempt % len(apis)]
        attempt += 1
        try:
            async with session.post(f"{api}/v1/heartbeats", json=body, headers=headers) as resp:
                stats[f"heartbeat {resp.status}"] += 1
                if resp.status == 202:
                    c.accepted.append((c.seq, c.state))
                    c.last_accepted_at = time.time()
                    c.accepted_at.append(c.last_accepted_at)
                    return True
                if resp.status < 500 and resp.status != 429:
                    return False  # refused for good (logged in stats)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            stats[f"heartbeat {type(exc).__name__}"] += 1
        await asyncio.sleep(1.0)
    return False


async def register_fleet(api: str, fleet: list[Container]) -> None:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        sem = asyncio.Semaphore(32)

        async def one(c: Container) -> None:
            async with (
                sem,
                session.post(
                    f"{api}/v1/workloads", json={"id": c.wid, "kind": "deployment"}
                ) as resp,
            ):
                if resp.status != 201:
                    raise RuntimeError(f"register {c.wid}: {resp.status} {await resp.text()}")
                c.token = (await resp.json())["heartbeat_token"]

        await asyncio.gather(*(one(c) for c in fleet))


# -- the nemesis ---------------------------------------------------------------------------------


@dataclass
class Fault:
    at: float
    kind: str
    target: str
    hold: float  # seconds until it is undone (restart, SIGCONT, connections allowed, API healthy)


# Drawn uniformly (sigkill twice as often). New kinds go at the end: a run restricted with
# --faults to the kinds of an older run draws exactly that run's schedule from its seed.
FAULT_KINDS = [
    "sigkill",
    "sigkill",
    "sigstop",
    "redis_restart",
    "db_down",
    "main_api_503",
    "main_api_hang",
    "redis_restart_empty",
    "pg_restart",
    "main_api_slow",
    "alert_503",
    "alert_hang",
    "alert_slow",
    "proxy_delay",
    "proxy_loss",
    "partition",
    "pg_failover",
]
# What a fault of each kind keeps statusd from doing until it is undone, and so the recovery
# (RECOVERY_S) the detection bound grants after it: None = nothing (a failing main API or alert
# receiver, a paused consumer add nothing to detection).
KEPT_FROM = {
    "redis_restart": "redis",
    "redis_restart_empty": "redis",
    "db_down": "database",
    "pg_restart": "database",
    "proxy_delay": "network",
    "proxy_loss": "network",
    "pg_failover": "database",  # from the primary's crash until its replica accepts writes
}
# The processes a partition may cut off from Redis and PostgreSQL (each in its own namespace).
PARTITIONED = ("serve1", "consume1", "worker")
PARTITION_HOLD_SCALE = 2.0  # 2-16 s: past the Redis clients' socket timeouts (5 s, 10 s)
PROXY_DELAY_S = (0.05, 0.5)
PROXY_LOSS = (0.05, 0.3)


def schedule(
    rng: random.Random, duration: float, names: list[str], kinds: list[str] | None = None
) -> list[Fault]:
    """The seeded schedule; `kinds` (a subset of FAULT_KINDS) only changes which kinds are drawn."""
    kinds = [k for k in FAULT_KINDS if kinds is None or k in kinds]
    faults, t = [], QUIET_START_S
    while True:
        t += rng.uniform(*FAULT_GAP_S)
        if t >= duration:
            return faults
        kind = rng.choice(kinds)
        target = rng.choice(names) if kind in ("sigkill", "sigstop") else kind.split("_")[0]
        if kind == "partition":
            target = rng.choice(PARTITIONED)
        hold = rng.uniform(1.0, 8.0) * (PARTITION_HOLD_SCALE if kind == "partition" else 1.0)
        faults.append(Fault(round(t, 2), kind, target, round(hold, 2)))


def kept_from(kind: str, target: str) -> str | None:
    """What this fault keeps statusd from (a key of RECOVERY_S), or None."""
    if kind in KEPT_FROM:
        return KEPT_FROM[kind]
    if kind == "partition":  # a partitioned consumer is a paused one: the other takes its shards
        return {"worker": "partitioned", "serve1": "ingest"}.get(target)
    if kind in ("sigkill", "sigstop") and target.startswith(("worker", "beat")):
        return "restarted" if kind == "sigkill" else "resumed"
    if kind in ("sigkill", "sigstop") and target.startswith("serve"):
        return "ingest"  # counted only while every serve is down (excused_windows)
    return None


class Nemesis:
    """Injects the schedule's faults; each undone after its hold. A fault on a server that an
    earlier fault still holds down is skipped (logged), as one outage cannot start twice."""

    def __init__(self, d: Deployment, seed: int, start: float, log: list[dict[str, Any]]) -> None:
        self.d, self.start, self.log = d, start, log
        self.procs = {p.name: p for p in d.procs}
        self.busy: set[str] = set()
        self.rng = random.Random(f"{seed}:nemesis")
        # A fault that kept statusd from its resource for less than it held the resource (a
        # failover: the database is back at the promotion, the rebuild of its replica after
        # that is the nemesis's own): wall time it ended, by id(fault).
        self.ended_early: dict[int, float] = {}

    async def run(self, faults: list[Fault]) -> None:
        await asyncio.gather(*(self.inject(f) for f in faults))

    async def inject(self, f: Fault) -> None:
        await asyncio.sleep(max(0.0, self.start + f.at - time.monotonic()))
        record = {"t": round(time.monotonic() - self.start, 2), **f.__dict__}
        method = f.kind.split("_")[0]
        resource = (
            f.target
            if method.startswith("sig") or method == "partition"
            else {"pg": "db"}.get(method, method)
        )
        if resource in self.busy:
            self.log.append({**record, "skipped": f"{resource} already faulted"})
            return
        self.busy.add(resource)
        record["wall_start"] = time.time()
        self.log.append(record)
        try:
            await getattr(self, method)(f)
        finally:
            record["wall_end"] = self.ended_early.pop(id(f), time.time())
            self.busy.discard(resource)

    async def sigkill(self, f: Fault) -> None:
        self.procs[f.target].kill()
        await asyncio.sleep(f.hold)
        self.procs[f.target].start()

    async def sigstop(self, f: Fault) -> None:
        self.procs[f.target].signal(signal.SIGSTOP)
        await asyncio.sleep(f.hold)
        self.procs[f.target].signal(signal.SIGCONT)

    async def redis(self, f: Fault) -> None:
        """SIGKILLed and restarted with its AOF, or (restart_empty) with its data gone."""
        redis = self.d.redis
        assert redis.process is not None
        redis.process.kill()
        redis.process.wait(10)
        if f.kind == "redis_restart_empty":
            shutil.rmtree(redis.data_dir, ignore_errors=True)
        await asyncio.sleep(min(f.hold, 3.0))
        await asyncio.to_thread(redis.start)

    async def db(self, f: Fault) -> None:
        """The run's database refuses connections, its sessions terminated."""
        d = self.d
        await d.admin(f'ALTER DATABASE "{d.database}" ALLOW_CONNECTIONS false')
        await d.admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{d.database}'"
        )
        await asyncio.sleep(f.hold)
        await d.admin(f'ALTER DATABASE "{d.database}" ALLOW_CONNECTIONS true')

    async def pg(self, f: Fault) -> None:
        """The run's own PostgreSQL crashes (stop -m immediate) and restarts after the hold."""
        pg = self.d.pg
        assert pg is not None, "pg_restart needs the run's own PostgreSQL (server binaries)"
        if f.kind == "pg_failover":
            await self.failover(f)
            return
        await asyncio.to_thread(pg.crash)
        await asyncio.sleep(f.hold)
        await asyncio.to_thread(pg.start)

    async def failover(self, f: Fault) -> None:
        """The primary crashes (stop -m immediate); after the hold (a failover manager's
        detection time) its replica is promoted; then the old primary is rebuilt as the new
        replica. The database stays busy through the rebuild, so no other database fault (nor a
        second failover) meets a primary without its replica."""
        pg = self.d.pg
        assert pg is not None
        crashed_at = time.time()
        await asyncio.to_thread(pg.crash)
        await asyncio.sleep(f.hold)
        await asyncio.to_thread(pg.promote)
        promoted_at = self.ended_early[id(f)] = time.time()
        back = asyncio.create_task(self._api_reads_database())
        await asyncio.to_thread(pg.rebuild)
        timing = pg.timings[-1]
        timing["down_s"] = round(promoted_at - crashed_at, 2)
        timing["api_back_after_promotion_s"] = round(await back - promoted_at, 2)

    async def _api_reads_database(self, within: float = 60.0) -> float:
        """When a `serve` first answers /readyz with its database check ok: its pool reached
        the new primary (a standby is refused by target_session_attrs=read-write)."""
        deadline = time.time() + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.time() < deadline:
                for port in self.d.ports:
                    with contextlib.suppress(
                        aiohttp.ClientError, OSError, TimeoutError, ValueError
                    ):
                        async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                            body = await resp.json()
                            if body.get("checks", {}).get("database") == "ok":
                                return time.time()
                await asyncio.sleep(0.1)
        return deadline

    async def main(self, f: Fault) -> None:
        self.d.main_api.mode = f.kind.removeprefix("main_api_")
        await asyncio.sleep(f.hold)
        self.d.main_api.mode = "ok"

    async def alert(self, f: Fault) -> None:
        self.d.alerts.mode = f.kind.removeprefix("alert_")
        await asyncio.sleep(f.hold)
        self.d.alerts.mode = "ok"

    async def proxy(self, f: Fault) -> None:
        """Delay or loss on statusd's links to Redis and PostgreSQL."""
        if f.kind == "proxy_delay":
            self.d.links.command(f"delay {self.rng.uniform(*PROXY_DELAY_S):.3f}")
        else:
            self.d.links.command(f"loss {self.rng.uniform(*PROXY_LOSS):.3f}")
        await asyncio.sleep(f.hold)
        self.d.links.command("heal")

    async def partition(self, f: Fault) -> None:
        """The process's link to Redis and PostgreSQL down: packets dropped, nothing refused."""
        ns = self.d.ns(f.target)
        assert ns is not None
        await asyncio.to_thread(ns.cut)
        try:
            await asyncio.sleep(f.hold)
        finally:
            await asyncio.to_thread(ns.heal)


# -- the oracle ----------------------------------------------------------------------------------


async def read_statusd(api: str, fleet: list[Container]) -> dict[str, dict[str, Any]]:
    """Each workload's state and full history, through the public API."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    out: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession(headers=headers) as session:
        sem = asyncio.Semaphore(16)

        async def one(wid: str) -> None:
            async with sem:
                async with session.get(f"{api}/v1/workloads/{wid}") as resp:
                    state = (await resp.json())["state"]
                items: list[dict[str, Any]] = []
                after: Any = None
                while True:
                    params = {"limit": "500", **({"after": str(after)} if after else {})}
                    async with session.get(
                        f"{api}/v1/workloads/{wid}/transitions", params=params
                    ) as resp:
                        page = await resp.json()
                    items += page["items"]
                    after = page.get("next_after")
                    if not after:
                        break
                out[wid] = {"state": state, "history": items}

        await asyncio.gather(*(one(c.wid) for c in fleet))
    return out


def judge(
    fleet: list[Container],
    seen: dict[str, dict[str, Any]],
    received: list[tuple[str, int, str, float]],
    lossy: list[tuple[float, float]] | None = None,
) -> dict[str, list[str]]:
    """`lossy`: spans in which Redis may have lost accepted reports (redis_loss_windows)."""
    problems: dict[str, list[str]] = defaultdict(list)
    by_workload: dict[str, list[int]] = defaultdict(list)
    for wid, tid, _key, _at in received:
        by_workload[wid].append(tid)
    for c in fleet:
        state, history = seen[c.wid]["state"], seen[c.wid]["history"]
        pushed = [(h["seq"], h["to"]) for h in history if h["source"] == "push"]
        accepted = iter(c.accepted)
        if not all(any(p == a for a in accepted) for p in pushed):
            problems["history_from_accepted"].append(f"{c.wid}: {pushed} not within {c.accepted}")
        if len({h["id"] for h in history}) != len(history):
            problems["applied_once"].append(c.wid)
        truth = c.truth()
        if c.role == "finishing" and c.accepted_at and in_spans(c.accepted_at[-1], lossy or []):
            truth |= DEAD  # its last report lost with Redis's data: silent, then judged as such
        if state not in truth:
            last = history[-1] if history else {}
            problems["final_state"].append(
                f"{c.wid} ({c.role}): {state}, truth {c.truth()}, last accepted "
                f"{c.accepted[-1] if c.accepted else None}, last transition "
                f"{last.get('to')} by {last.get('source')} at {last.get('recorded_at')}"
            )
        verdicts = [h for h in history if h["to"] in DEAD]
        if c.role in ("steady", "flapping") and verdicts:
            problems["no_false_verdict"].append(false_verdict(c, verdicts[0]))
        # Each history was read before the main API's log: what statusd wrote for the workload
        # after the read (a recovery, a verdict) is newer than its history's last transition.
        want = [h["id"] for h in history]
        got = [t for t in by_workload.get(c.wid, []) if t <= max(want, default=0)]
        firsts = list(dict.fromkeys(got))
        if sorted(set(got)) != sorted(want):
            problems["main_api_has_all"].append(f"{c.wid}: got {sorted(set(got))}, history {want}")
        elif firsts != sorted(firsts):
            problems["main_api_in_order"].append(f"{c.wid}: {firsts}")
    return problems


# Reports Redis may lose before a consumer applied them: with its data removed, every report
# accepted and not yet consumed (the consumers' lag, at most the longest a database fault and
# its retries kept them from applying: well under this); a SIGKILL with the AOF fsynced every
# second, the reports of the last write not yet flushed.
UNAPPLIED_MAX_S = {"redis_restart_empty": 30.0, "redis_restart": 2.0}


def redis_loss_windows(injected: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Unix-time spans in which a report answered 202 may have been lost with Redis's data: from
    UNAPPLIED_MAX_S before the kill until the restarted server was up (`wall_end`). A 202 that
    reaches its container after the kill is the answer to an append the old server made just
    before it died, still on its way through `serve` (tens of ms on a loaded machine): nothing
    can be stored while no server runs, so every 202 of the outage is one of those."""
    return [
        (f["wall_start"] - UNAPPLIED_MAX_S[f["kind"]], f["wall_end"])
        for f in injected
        if "wall_start" in f and f["kind"] in UNAPPLIED_MAX_S
    ]


def in_spans(at: float, spans: list[tuple[float, float]]) -> bool:
    return any(lo <= at <= hi for lo, hi in spans)


def judge_accepted_applied(
    fleet: list[Container], seen: dict[str, dict[str, Any]], injected: list[dict[str, Any]]
) -> dict[str, list[str]]:
    """No acknowledged write lost: every change a container reported and statusd accepted (202)
    is a push transition of its history. A change is a run of consecutive accepted reports of one
    status after a run of another; its transition carries the seq of one report of the run (a
    consumer batch holding several applies the newest). `history_from_accepted` checks the
    converse. Excused: a run whose every report Redis may have lost before it was applied
    (UNAPPLIED_MAX_S), and the run after such a one (the state it left may not have been
    reached)."""
    problems: dict[str, list[str]] = defaultdict(list)
    lossy = redis_loss_windows(injected)
    for c in fleet:
        pushed = {(h["seq"], h["to"]) for h in seen[c.wid]["history"] if h["source"] == "push"}
        runs: list[tuple[str, list[tuple[int, str]], bool]] = []  # status, reports, all excused
        for report, at in zip(c.accepted, c.accepted_at, strict=True):
            excused = in_spans(at, lossy)
            if runs and runs[-1][0] == report[1]:
                status, reports, all_excused = runs[-1]
                runs[-1] = (status, [*reports, report], all_excused and excused)
            else:
                runs.append((report[1], [report], excused))
        for i, (status, reports, all_excused) in enumerate(runs):
            if all_excused or (i > 0 and runs[i - 1][2]):
                continue
            if not pushed.intersection(reports):
                problems["accepted_in_history"].append(
                    f"{c.wid}: {status} reported (seq {reports[0][0]}-{reports[-1][0]}), "
                    "accepted, missing from its history"
                )
    return problems


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def judge_alerts(fleet: list[Container], alerts: list[dict[str, Any]]) -> dict[str, list[str]]:
    """At most one alert per real incident (a re-send of the same alert, same transition and
    event, is one alert); none for a container alive throughout. An incident is one death: its
    `unreachable` and, if it lasts, its `lost` (escalation, one each)."""
    problems: dict[str, list[str]] = defaultdict(list)
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for event, wid, _tid in {
        (a.get("event"), a.get("workload_id"), a.get("transition_id")) for a in alerts
    }:
        if wid is not None:
            per[wid][str(event)] += 1
    for c in fleet:
        events = per.get(c.wid, Counter())
        if c.role in ("steady", "flapping") and events:
            problems["alerts_none_for_alive"].append(f"{c.wid} ({c.role}): {dict(events)}")
        elif any(n > 1 for e, n in events.items() if e in ("unreachable", "lost")):
            problems["alerts_one_per_incident"].append(f"{c.wid} ({c.role}): {dict(events)}")
    return problems


def excused_windows(injected: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Unix-time spans during which faults kept statusd from hearing or sweeping, each extended
    by its documented recovery; a `serve` fault only where every `serve` was down at once."""
    spans: list[tuple[float, float]] = []
    serves: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for f in injected:
        if "wall_start" not in f:
            continue  # skipped: the target was already faulted
        kept = kept_from(f["kind"], f["target"])
        if kept == "ingest":
            serves[f["target"]].append((f["wall_start"], f["wall_end"]))
        elif kept is not None:
            spans.append((f["wall_start"], f["wall_end"] + RECOVERY_S[kept]))
    if len(serves) > 1:
        (a, *rest) = serves.values()
        for other in rest:
            a = [(max(s, t), min(e, u)) for s, e in a for t, u in other if max(s, t) < min(e, u)]
        spans += [(s, e + RECOVERY_S["ingest"]) for s, e in a]
    return spans


def overlap(window: tuple[float, float], spans: list[tuple[float, float]]) -> float:
    """Seconds of `window` covered by the union of `spans`."""
    lo, hi = window
    covered, reach = 0.0, lo
    for s, e in sorted(spans):
        s, e = max(s, reach), min(e, hi)
        if e > s:
            covered += e - s
            reach = e
    return covered


def judge_detection(
    fleet: list[Container], seen: dict[str, dict[str, Any]], injected: list[dict[str, Any]]
) -> tuple[dict[str, list[str]], list[float]]:
    """Every real death detected (UNREACHABLE) within DETECTION_BOUND_S of its last accepted
    heartbeat, plus the time faults kept statusd from hearing or sweeping in between. Returns the
    problems and each death's detection time, for the summary."""
    problems: dict[str, list[str]] = defaultdict(list)
    spans = excused_windows(injected)
    took: list[float] = []
    for c in fleet:
        if c.role != "dying" or not c.last_accepted_at:
            continue
        verdicts = [
            _epoch(h["recorded_at"])
            for h in seen[c.wid]["history"]
            if h["to"] == "UNREACHABLE" and _epoch(h["recorded_at"]) > c.last_accepted_at
        ]
        if not verdicts:
            continue  # never detected: final_state says so
        detected = min(verdicts)
        elapsed = detected - c.last_accepted_at
        excused = overlap((c.last_accepted_at, detected), spans)
        took.append(round(elapsed, 1))
        if elapsed > DETECTION_BOUND_S + excused:
            problems["detection_within_bound"].append(
                f"{c.wid}: {elapsed:.1f} s after its last heartbeat, bound "
                f"{DETECTION_BOUND_S:g} + {excused:.1f} s of faults"
            )
    return problems, took


def false_verdict(c: Container, verdict: dict[str, Any]) -> str:
    """What the oracle knows of a false verdict: how long before it statusd had last answered the
    container 202 (under the TTL: statusd had heard it; over: it had not, the load or a fault
    kept the heartbeats from it) and how late the harness's own sleeps ran for it."""
    at = _epoch(verdict["recorded_at"])
    heard = max((t for t in c.accepted_at if t <= at), default=None)
    since = f"{at - heard:.1f} s after its last 202" if heard is not None else "never heard"
    return f"{c.wid}: {verdict['to']} at {verdict['recorded_at']}, {since}, harness late {c.late_s:.1f} s"


class LoopLag:
    """How late the harness's own event loop runs (the fleet's clients, the main API, the alert
    receiver share it): a machine too loaded to run the harness shows here."""

    TICK_S = 0.5

    def __init__(self) -> None:
        self.worst = 0.0
        self.late_ticks = 0  # ticks more than 1 s late
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.TICK_S)
            lag = time.monotonic() - before - self.TICK_S
            self.worst = max(self.worst, lag)
            self.late_ticks += lag > 1.0

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def log_problems(d: Deployment) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = defaultdict(list)
    for proc in d.procs:
        if not proc.alive():
            problems["processes_running"].append(
                f"{proc.name} exited {proc.popen and proc.popen.returncode}"
            )
        text = proc.log.read_text(errors="replace")
        for line in text.splitlines():
            if "Traceback" in line or '"level": "critical"' in line or "api.unhandled" in line:
                problems["no_unhandled_exception"].append(f"{proc.name}: {line[:300]}")
    return problems


# -- the run -------------------------------------------------------------------------------------


def make_fleet(rng: random.Random, count: int, duration: float) -> list[Container]:
    fleet = []
    for i in range(count):
        roll = rng.random()
        role = (
            "steady"
            if roll < 0.8
            else "flapping"
            if roll < 0.84
            else "finishing"
            if roll < 0.92
            else "dying"
        )
        event_at = rng.uniform(QUIET_START_S, duration * 0.7)
        fleet.append(Container(f"c{i:05d}", role, round(event_at, 2)))
    return fleet


async def run(
    seed: int,
    duration: float,
    containers: int,
    settle: float,
    work: Path,
    kinds: list[str] | None = None,
) -> int:
    rng = random.Random(seed)
    fleet = make_fleet(rng, containers, duration)
    kinds = kinds or sorted(set(FAULT_KINDS))
    if "partition" in kinds and (why := chaos_netns.problem()):
        print(f"partition faults skipped: {why}", file=sys.stderr, flush=True)
        kinds = [k for k in kinds if k != "partition"]
    d = Deployment(work, seed, kinds)
    if d.pg is None:  # the shared server is never restarted
        kinds = [k for k in kinds if k not in ("pg_restart", "pg_failover")]
    if d.net is None and "partition" in kinds:
        print("partition faults skipped: no PostgreSQL of the run's own", file=sys.stderr)
        kinds = [k for k in kinds if k != "partition"]
    faults = schedule(
        rng,
        duration,
        [f"serve{i}" for i in range(2)]
        + [f"consume{i}" for i in range(2)]
        + ["worker", "beat0", "beat1"],
        kinds,
    )
    print(
        json.dumps(
            {"seed": seed, "duration_s": duration, "containers": containers, "faults": len(faults)}
        ),
        flush=True,
    )
    injected: list[dict[str, Any]] = []
    stats: Counter[str] = Counter()
    lag = LoopLag()
    lag.start()
    try:
        await d.start()
        apis = d.apis
        await register_fleet(apis[0], fleet)
        start = time.monotonic()
        # The fleet lives on through the settle time (faults stop at `duration`, containers do
        # not) and until the oracle has read statusd: the living heartbeat while it reads (with
        # 2,000 workloads on a loaded machine the read takes tens of seconds; a fleet that fell
        # silent meanwhile would be declared UNREACHABLE, rightly, before the read reached it).
        end = start + duration + settle
        done = asyncio.Event()
        # One client session for the fleet, its connections bounded per `serve`, as a load
        # balancer's are per backend; each try times out as statusd-client's does. With one
        # bound for both, a `serve` cut off from Redis (answering 503 after its 2 s ingest
        # timeout) held most of the 2,000 containers' connections, the other `serve`'s tries
        # queued behind them, and a container's gap between accepted heartbeats passed the TTL.
        fleet_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=256 * len(apis), limit_per_host=256),
        )
        runners = [
            asyncio.create_task(
                run_container(
                    fleet_session,
                    c,
                    random.Random(f"{seed}:{c.wid}"),
                    apis,
                    start,
                    start + duration,
                    done,
                    stats,
                )
            )
            for c in fleet
        ]
        await Nemesis(d, seed, start, injected).run(faults)
        for proc in d.procs:  # the orchestrator's last word: nothing left stopped
            proc.signal(signal.SIGCONT)
        d.main_api.mode = d.alerts.mode = "ok"
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        seen = await read_statusd(apis[0], fleet)
        done.set()
        await asyncio.gather(*runners)
        await fleet_session.close()
        problems = judge(fleet, seen, d.main_api.received, redis_loss_windows(injected))
        problems.update(log_problems(d))
        problems.update(judge_alerts(fleet, d.alerts.alerts))
        detection, took = judge_detection(fleet, seen, injected)
        problems.update(detection)
        problems.update(judge_accepted_applied(fleet, seen, injected))
    finally:
        lag.stop()
        await d.stop()
    checks = [
        "history_from_accepted", "applied_once", "final_state", "no_false_verdict",
        "main_api_has_all", "main_api_in_order", "alerts_one_per_incident",
        "alerts_none_for_alive", "detection_within_bound", "processes_running",
        "no_unhandled_exception", "accepted_in_history",
    ]  # fmt: skip
    resends = sum(n - 1 for n in Counter(k for _, _, k, _ in d.main_api.received).values())
    summary = {
        "seed": seed,
        "duration_s": duration,
        "containers": containers,
        "roles": Counter(c.role for c in fleet),
        "faults_injected": Counter(f["kind"] for f in injected if "skipped" not in f),
        "faults_skipped": sum(1 for f in injected if "skipped" in f),
        "own_postgresql": d.pg is not None,
        "pg_failovers": d.pg.timings if d.pg else [],
        "heartbeats": dict(stats),
        "main_api_received": len(d.main_api.received),
        "main_api_idempotent_resends": resends,
        # Above HEARTBEAT_TTL_S - BEAT_S the harness itself went silent for a container: a
        # verdict then is the load's, not a fault's (docs/reliability.md).
        "harness_late_max_s": round(max((c.late_s for c in fleet), default=0.0), 1),
        "harness_loop_lag": {"worst_s": round(lag.worst, 2), "ticks_over_1s": lag.late_ticks},
        "alerts_received": Counter(str(a.get("event")) for a in d.alerts.alerts),
        "detection_s": {
            "deaths": len(took),
            "p50": sorted(took)[len(took) // 2] if took else None,
            "max": max(took, default=None),
            "bound_without_faults": DETECTION_BOUND_S,
        },
        "checks": {
            name: (
                "held"
                if not problems.get(name)
                else {"failed": len(problems[name]), "first": problems[name][:5]}
            )
            for name in checks
        },
        "replay": f"python bench/chaos.py --seed {seed} --duration {duration:g} "
        f"--containers {containers} --settle {settle:g}"
        + (f" --faults {','.join(sorted(set(kinds)))}" if set(kinds) != set(FAULT_KINDS) else ""),
    }
    print(json.dumps(summary, indent=2, default=str))
    # The summary shows five of each check's problems; a post-mortem needs them all, the faults'
    # wall times and what each container was answered 202 for, and when.
    (work / "records.json").write_text(
        json.dumps(
            {
                "problems": problems,
                "faults": injected,
                "accepted": {
                    c.wid: [
                        [s, st, round(at, 3)]
                        for (s, st), at in zip(c.accepted, c.accepted_at, strict=True)
                    ]
                    for c in fleet
                },
            },
            default=str,
        )
    )
    return 1 if any(problems.get(name) for name in checks) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, default=None, help="replays a run (default: random)")
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of faults")
    parser.add_argument("--containers", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=LOST_AFTER_S + 30, help="seconds after")
    parser.add_argument(
        "--keep", action="store_true", help="keep the run's directory (logs, data) and print it"
    )
    parser.add_argument(
        "--faults",
        default=None,
        help=f"comma-separated fault kinds to draw from (default: all of {sorted(set(FAULT_KINDS))})",
    )
    args = parser.parse_args()
    kinds = args.faults.split(",") if args.faults else None
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    work = Path(tempfile.mkdtemp(prefix="statusd-chaos-"))
    try:
        code = asyncio.run(run(seed, args.duration, args.containers, args.settle, work, kinds))
    finally:
        if args.keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
