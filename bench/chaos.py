"""Chaos run: a whole statusd deployment under a seeded random fault schedule, checked by an oracle.

    .venv/bin/python bench/chaos.py --seed 7 --duration 150      (make chaos SEED=7 DURATION=150)

The deployment, all on loopback: two `serve`, two `consume`, a `worker` (sweep, poll, sync), two
`beat` (one leader), a data Redis with AOF, a broker Redis, a fresh database on the PostgreSQL at
STATUSD_CHAOS_PG (default 127.0.0.1:5432), a main API that records what it receives, and a fleet
of simulated containers whose truth the harness scripts and records: alive throughout (some
flipping READY <-> DEGRADED), finishing (STOPPING, STOPPED), dying (silent from a known moment).

The nemesis draws from the seed, every 5-10 s, several faults overlapping: SIGKILL of any statusd
process (restarted after a delay, as an orchestrator would), SIGSTOP/SIGCONT, Redis SIGKILLed and
restarted with its AOF, the database refusing connections for a while (ALLOW_CONNECTIONS false and
its sessions terminated), the main API answering 503 or hanging. The same seed replays the same
schedule and fleet.

After the faults stop and a settle time, the oracle reads only what an outsider sees (the
harness's records, the main API's log, the public API, the processes' logs) and checks:
- every workload's pushed history is a subsequence of what it sent and statusd accepted (202),
  in seq order, nothing applied twice, and the last accepted report is its state;
- the main API received every transition of that history, once per transition, in per-workload
  order (an idempotent re-send of the same Idempotency-Key is counted, not a fault);
- every container's true final state is statusd's: alive ones their last report, finished ones
  STOPPED, dead ones UNREACHABLE or LOST;
- no UNREACHABLE or LOST ever for a container that was alive throughout;
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
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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

    def start(self) -> None:
        if self.alive():
            return  # two overlapping faults on one process: the first restart wins
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [STATUSD, *self.args],
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


class MainAPI:
    """The loopback main API: records every PUT; the nemesis makes it answer 503 or hang."""

    def __init__(self) -> None:
        self.received: list[tuple[str, int, str, float]] = []  # wid, transition id, key, time
        self.mode = "ok"
        self.port = free_port()
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
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/workloads/{id}/status", self.put)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class Deployment:
    def __init__(self, work: Path, seed: int) -> None:
        self.work = work
        self.redis = EmbeddedRedis(data_dir=work / "redis", appendonly=True)
        self.broker = EmbeddedRedis(data_dir=work / "broker", appendonly=True)
        self.database = f"statusd_chaos_{seed}_{uuid.uuid4().hex[:6]}"
        self.ports = [free_port(), free_port()]
        self.main_api = MainAPI()
        self.procs: list[Proc] = []

    @property
    def database_url(self) -> str:
        base = PG.rsplit("/", 1)[0]
        return f"{base}/{self.database}"

    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")},
            "STATUSD_SECRET": SECRET,
            "STATUSD_API_TOKEN": API_TOKEN,
            "STATUSD_REDIS_URL": self.redis.url,
            "STATUSD_BROKER_URL": f"redis://127.0.0.1:{self.broker.port}/0",
            "STATUSD_REDIS_PREFIX": "chaos:",
            "STATUSD_DATABASE_URL": self.database_url,
            "STATUSD_STATE_DIR": str(self.work / "state"),
            "STATUSD_LOG_FORMAT": "json",
            "STATUSD_LOG_LEVEL": "WARNING",
            "STATUSD_HEARTBEAT_TTL": str(HEARTBEAT_TTL_S),
            "STATUSD_LOST_AFTER": str(LOST_AFTER_S),
            "STATUSD_SWEEP_INTERVAL": "2",
            "STATUSD_SYNC_INTERVAL": "2",
            "STATUSD_START_TIMEOUT": "60",
            "STATUSD_MAIN_API_URL": f"http://127.0.0.1:{self.main_api.port}",
            "STATUSD_MAIN_API_TOKEN": MAIN_TOKEN,
            "STATUSD_SHARD_LEASE_MS": "3000",
            "STATUSD_BEAT_LEASE_MS": "3000",
        }

    async def start(self) -> None:
        self.redis.start()
        self.broker.start()
        await self.main_api.start()
        await _pg_admin(f'CREATE DATABASE "{self.database}"')
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
        commands += [(f"beat{i}", ["beat"]) for i in range(2)]
        for name, args in commands:
            proc = Proc(name, args, env, logs / f"{name}.log")
            proc.start()
            self.procs.append(proc)
        async with aiohttp.ClientSession() as session:
            for port in self.ports:
                await _wait_ready(session, f"http://127.0.0.1:{port}/readyz")

    async def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        await self.main_api.stop()
        self.redis.stop()
        self.broker.stop()
        with contextlib.suppress(Exception):
            await _pg_admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


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
    end: float,
    stats: Counter[str],
) -> None:
    """Heartbeat as scripted until `end`; from `calm_at` on (faults over) no more changes, so the
    truth the oracle compares with is settled."""
    await asyncio.sleep(rng.uniform(0, BEAT_S))
    plan: list[str] = []
    while time.monotonic() < end:
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
        sent = await _send(session, apis, c, end, stats)
        if plan and sent:
            plan.pop(0)
            if not plan:
                return  # finished: a final state needs no more heartbeats
        await asyncio.sleep(BEAT_S * rng.uniform(0.8, 1.0))


async def _send(
    session: aiohttp.ClientSession, apis: list[str], c: Container, end: float, stats: Counter[str]
) -> bool:
    """One report, retried (as statusd-client does) until accepted or the run ends; each try
    goes to the next `serve`, as through a load balancer."""
    body = {"workload_id": c.wid, "status": c.state, "seq": c.seq, "detail": f"{c.state}@{c.seq}"}
    headers = {"Authorization": f"Bearer {c.token}"}
    attempt = c.seq
    while time.monotonic() < end:
        api = apis[attempt % len(apis)]
        attempt += 1
        try:
            async with session.post(f"{api}/v1/heartbeats", json=body, headers=headers) as resp:
                stats[f"heartbeat {resp.status}"] += 1
                if resp.status == 202:
                    c.accepted.append((c.seq, c.state))
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


def schedule(rng: random.Random, duration: float, names: list[str]) -> list[Fault]:
    kinds = [
        "sigkill",
        "sigkill",
        "sigstop",
        "redis_restart",
        "db_down",
        "main_api_503",
        "main_api_hang",
    ]
    faults, t = [], QUIET_START_S
    while True:
        t += rng.uniform(*FAULT_GAP_S)
        if t >= duration:
            return faults
        kind = rng.choice(kinds)
        target = rng.choice(names) if kind in ("sigkill", "sigstop") else kind.split("_")[0]
        faults.append(Fault(round(t, 2), kind, target, round(rng.uniform(1.0, 8.0), 2)))


async def nemesis(
    d: Deployment, faults: list[Fault], start: float, log: list[dict[str, Any]]
) -> None:
    procs = {p.name: p for p in d.procs}

    async def inject(f: Fault) -> None:
        await asyncio.sleep(max(0.0, start + f.at - time.monotonic()))
        log.append({"t": round(time.monotonic() - start, 2), **f.__dict__})
        if f.kind == "sigkill":
            procs[f.target].kill()
            await asyncio.sleep(f.hold)
            procs[f.target].start()
        elif f.kind == "sigstop":
            procs[f.target].signal(signal.SIGSTOP)
            await asyncio.sleep(f.hold)
            procs[f.target].signal(signal.SIGCONT)
        elif f.kind == "redis_restart":
            assert d.redis.process is not None
            d.redis.process.kill()
            d.redis.process.wait(10)
            await asyncio.sleep(min(f.hold, 3.0))
            await asyncio.to_thread(d.redis.start)
        elif f.kind == "db_down":
            await _pg_admin(f'ALTER DATABASE "{d.database}" ALLOW_CONNECTIONS false')
            await _pg_admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{d.database}'"
            )
            await asyncio.sleep(f.hold)
            await _pg_admin(f'ALTER DATABASE "{d.database}" ALLOW_CONNECTIONS true')
        else:
            d.main_api.mode = f.kind.removeprefix("main_api_")
            await asyncio.sleep(f.hold)
            d.main_api.mode = "ok"

    await asyncio.gather(*(inject(f) for f in faults))


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
) -> dict[str, list[str]]:
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
        if state not in c.truth():
            last = history[-1] if history else {}
            problems["final_state"].append(
                f"{c.wid} ({c.role}): {state}, truth {c.truth()}, last accepted "
                f"{c.accepted[-1] if c.accepted else None}, last transition "
                f"{last.get('to')} by {last.get('source')} at {last.get('recorded_at')}"
            )
        if c.role in ("steady", "flapping") and any(h["to"] in DEAD for h in history):
            problems["no_false_verdict"].append(c.wid)
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


async def run(seed: int, duration: float, containers: int, settle: float, work: Path) -> int:
    rng = random.Random(seed)
    fleet = make_fleet(rng, containers, duration)
    d = Deployment(work, seed)
    faults = schedule(
        rng,
        duration,
        [f"serve{i}" for i in range(2)]
        + [f"consume{i}" for i in range(2)]
        + ["worker", "beat0", "beat1"],
    )
    print(
        json.dumps(
            {"seed": seed, "duration_s": duration, "containers": containers, "faults": len(faults)}
        ),
        flush=True,
    )
    injected: list[dict[str, Any]] = []
    stats: Counter[str] = Counter()
    try:
        await d.start()
        apis = [f"http://127.0.0.1:{p}" for p in d.ports]
        await register_fleet(apis[0], fleet)
        start = time.monotonic()
        # The fleet lives on through the settle time (faults stop at `duration`, containers do
        # not): the oracle reads while the living still heartbeat.
        end = start + duration + settle
        # One client session for the fleet, its connections bounded, as a load balancer's are.
        fleet_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10), connector=aiohttp.TCPConnector(limit=256)
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
                    end,
                    stats,
                )
            )
            for c in fleet
        ]
        await nemesis(d, faults, start, injected)
        for proc in d.procs:  # the orchestrator's last word: nothing left stopped
            proc.signal(signal.SIGCONT)
        d.main_api.mode = "ok"
        await asyncio.sleep(max(0.0, end - BEAT_S * 2 - time.monotonic()))
        seen = await read_statusd(apis[0], fleet)
        await asyncio.gather(*runners)
        await fleet_session.close()
        problems = judge(fleet, seen, d.main_api.received)
        problems.update(log_problems(d))
    finally:
        await d.stop()
    checks = [
        "history_from_accepted", "applied_once", "final_state", "no_false_verdict",
        "main_api_has_all", "main_api_in_order", "processes_running", "no_unhandled_exception",
    ]  # fmt: skip
    resends = sum(n - 1 for n in Counter(k for _, _, k, _ in d.main_api.received).values())
    summary = {
        "seed": seed,
        "duration_s": duration,
        "containers": containers,
        "roles": Counter(c.role for c in fleet),
        "faults_injected": Counter(f["kind"] for f in injected),
        "heartbeats": dict(stats),
        "main_api_received": len(d.main_api.received),
        "main_api_idempotent_resends": resends,
        "checks": {
            name: (
                "held"
                if not problems.get(name)
                else {"failed": len(problems[name]), "first": problems[name][:5]}
            )
            for name in checks
        },
        "replay": f"python bench/chaos.py --seed {seed} --duration {duration:g} --containers {containers}",
    }
    print(json.dumps(summary, indent=2, default=str))
    return 1 if any(problems.get(name) for name in checks) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, default=None, help="replays a run (default: random)")
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of faults")
    parser.add_argument("--containers", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=LOST_AFTER_S + 30, help="seconds after")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    work = Path(tempfile.mkdtemp(prefix="statusd-chaos-"))
    try:
        code = asyncio.run(run(seed, args.duration, args.containers, args.settle, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
