"""Scale-out benchmark: does a second process add throughput? Ratios measured in one run.

    .venv/bin/python bench/scale_out.py [--quick] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Two questions, each answered with real `statusd` processes on loopback:

  apply    1 vs 2 `statusd consume` processes draining the same pre-filled backlog: N heartbeats
           over W notebook workloads, each alternating READY / IDLE, so nearly every entry is a
           real transition (row lock, UPDATE, history row, outbox row) in PostgreSQL, not the
           cheap "nothing changed" skip. Rate = entries acknowledged per second, from the first
           delivery to an empty group (lag and pending 0); afterwards every workload's last_seq in
           the database is checked against the last heartbeat sent.
  ingest   1 vs 2 `statusd serve --consumers 0` processes (two ports, as two pods behind a
           Service) under the same load: two load generators (wrk when installed, else
           bench/ingest.py's Python client), half the connections each. Plus the per-process
           ceiling: one server pinned to CPU 0, the load on CPU 1 (bench/ingest.py's method).

Each run gets a fresh database (created on --pg, migrated with `statusd migrate`, dropped after)
and its own key prefix on a redis-server the script starts itself. No assertions beyond
correctness of the apply run: it prints rates and ratios. On a 2-CPU machine the load generator,
Redis and PostgreSQL share the cores with the processes measured: read the ratio as a lower
bound, and docs/benchmarks.md for what N machines imply.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ingest as ingest_bench  # noqa: E402  (bench/ingest.py: load generators, ports, pinning)

from statusd.ingest.streams import stream_stats  # noqa: E402
from statusd.keys import Keys  # noqa: E402

API_TOKEN = "bench-api-token-" + "t" * 32
SHARDS = 16
CONSUMERS_PER_PROCESS = 2  # as in deploy/kubernetes (STATUSD_CONSUMERS)
BATCH = 500


@dataclass(frozen=True)
class Size:
    workloads: int
    rounds: int  # heartbeats per workload in the backlog
    ingest_s: float
    concurrency: int


QUICK = Size(workloads=300, rounds=10, ingest_s=3.0, concurrency=32)
FULL = Size(workloads=10_000, rounds=10, ingest_s=10.0, concurrency=64)
# The apply rate is read between these fractions of the backlog applied: the first tenth covers
# start-up and shard hand-over (a second process gets its share on its first check-in), the last
# tenth the tail where shards run dry one by one. Both runs are read over the same window.
WINDOW = (0.1, 0.9)
# Shard leases for the apply runs: the default (10 s, renewed and balanced every third) would
# spend most of a run with the first process holding every shard; 1.5 s balances within ~0.5 s.
APPLY_LEASE_MS = 1500
CLK_TCK = os.sysconf("SC_CLK_TCK")


def statusd() -> list[str]:
    return [str(Path(sys.executable).with_name("statusd"))]


def env_for(
    redis_url: str, prefix: str, database_url: str, port: int, state: Path
) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")},
        "STATUSD_SECRET": ingest_bench.SECRET,
        "STATUSD_API_TOKEN": API_TOKEN,
        "STATUSD_REDIS_URL": redis_url,
        "STATUSD_REDIS_PREFIX": prefix,
        "STATUSD_DATABASE_URL": database_url,
        "STATUSD_PORT": str(port),
        "STATUSD_STATE_DIR": str(state),
        "STATUSD_LOG_LEVEL": "WARNING",
        "STATUSD_LOG_FORMAT": "json",
        "STATUSD_STREAM_SHARDS": str(SHARDS),
        "STATUSD_CONSUMERS": str(CONSUMERS_PER_PROCESS),
        "STATUSD_REDIS_MAX_CONNECTIONS": "256",
        # Nobody drains the outbox here; without a URL sync is off and rows just stay pending.
        "STATUSD_MAIN_API_URL": "",
    }


@contextlib.contextmanager
def processes(
    commands: list[tuple[list[str], dict[str, str]]],
    log_dir: Path,
    *,
    started: list[int] | None = None,
) -> Iterator[None]:
    """Start every command (own session, log file); SIGTERM then SIGKILL them all at the end.
    `started`, if given, receives the pids (for CPU accounting from /proc).

    A SIGTERM to the bench (a `kill`, a CI timeout) ends it through this cleanup too: each
    process has a session of its own, so by default it would outlive the bench and keep
    spending the cores of the next run."""
    procs: list[subprocess.Popen[bytes]] = []
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for n, (args, env) in enumerate(commands):
            with (log_dir / f"proc-{time.monotonic_ns()}-{n}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
                if started is not None:
                    started.append(procs[-1].pid)
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes and their (reaped or live) children, from /proc."""
    total = 0.0
    for pid in pids:
        for proc in [pid, *_descendants(pid)]:
            with contextlib.suppress(OSError, IndexError):
                fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in fields[11:15]) / CLK_TCK
    return total


def _descendants(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [d for c in children for d in (int(c), *_descendants(int(c)))]
    return []


def postgres_pids() -> list[int]:
    """PostgreSQL's postmaster(s): cpu_seconds of one counts every backend, including those that
    start (and end) after this call, so an apply run's PostgreSQL share is counted once."""
    names: dict[int, tuple[str, int]] = {}
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            if proc.name.isdigit():
                comm = (proc / "comm").read_text().strip()
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                names[int(proc.name)] = (comm, parent)
    return [
        pid
        for pid, (comm, parent) in names.items()
        if comm == "postgres" and names.get(parent, ("", 0))[0] != "postgres"
    ]


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = f"statusd_bench_{secrets.token_hex(4)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def wait_http(url: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not answer 200 within {within}s")


async def register(
    http: aiohttp.ClientSession, api: str, ids: list[str], kind: str
) -> dict[str, str]:
    """Register `ids` as `kind` through the API (16 in flight); {id: heartbeat token}."""
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    tokens: dict[str, str] = {}
    limit = asyncio.Semaphore(16)

    async def one(wid: str) -> None:
        body = {"id": wid, "kind": kind}
        async with limit, http.post(f"{api}/v1/workloads", json=body, headers=auth) as response:
            assert response.status == 201, await response.text()
            tokens[wid] = (await response.json())["heartbeat_token"]

    await asyncio.gather(*(one(w) for w in ids))
    return tokens


async def prefill(api: str, size: Size) -> None:
    """Register the workloads and push the backlog through the real ingest (no consumer runs)."""
    ids = [f"nb-{i:05d}" for i in range(size.workloads)]
    async with aiohttp.ClientSession() as http:
        tokens = await register(http, api, ids, "notebook")
        items = [
            {
                "token": tokens[wid],
                "workload_id": wid,
                "status": "READY" if seq % 2 else "IDLE",
                "seq": seq,
            }
            for seq in range(1, size.rounds + 1)
            for wid in ids
        ]
        for start in range(0, len(items), BATCH):
            async with http.post(
                f"{api}/v1/heartbeats:batch", json={"items": items[start : start + BATCH]}
            ) as response:
                body = await response.json()
                assert response.status == 200 and body["rejected"] == 0, body


@dataclass(frozen=True)
class Drain:
    rate: float  # entries/s between WINDOW's fractions of the backlog applied
    seconds: float  # from the first delivery to an empty group
    cpu_per_1000: float  # consume processes' CPU seconds per 1,000 entries, over the window
    postgres_per_1000: float  # PostgreSQL's, the same way


async def drain(redis_url: str, keys: Keys, total: int, within: float, pids: list[int]) -> Drain:
    """Poll the stream stats until the group is empty; time the window, count the CPU."""
    from statusd.redis_runtime import create_redis

    redis = create_redis(redis_url, 4)
    # fraction applied -> (when first seen, consume CPU, PostgreSQL CPU): start-up (imports,
    # connecting) stays out of the CPU figures as it stays out of the rate.
    marks: dict[float, tuple[float, float, float]] = {}
    pg = postgres_pids()
    try:
        first: float | None = None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            stats = await stream_stats(redis, keys, SHARDS)
            # No group yet (the consumers are still starting): the whole stream is undelivered.
            lag = stats.length if stats.lag is None else stats.lag
            done = 1 - (lag + stats.pending) / total
            now = time.monotonic()
            # The clock starts with the first delivery, not the first ack: a consumer acks a
            # whole batch after its commits, so by the first ack much of the work is done.
            if first is None and lag < total:
                first = now
            for fraction in WINDOW:
                if done >= fraction and fraction not in marks:
                    marks[fraction] = (now, cpu_seconds(pids), cpu_seconds(pg))
            if first is not None and done >= 1:
                (t0, cpu0, pg0), (t1, cpu1, pg1) = (marks[f] for f in WINDOW)
                entries = (WINDOW[1] - WINDOW[0]) * total
                return Drain(
                    rate=entries / max(t1 - t0, 1e-3),
                    seconds=now - first,
                    cpu_per_1000=(cpu1 - cpu0) * 1000 / entries,
                    postgres_per_1000=(pg1 - pg0) * 1000 / entries,
                )
            await asyncio.sleep(0.02)
    finally:
        await redis.aclose()
    raise SystemExit(f"the backlog was not applied within {within}s")


async def applied(database_url: str, seq: int) -> tuple[int, int]:
    """(workloads whose last applied seq is `seq`, transitions recorded)."""
    conn = await asyncpg.connect(database_url)
    try:
        done = await conn.fetchval("SELECT count(*) FROM workloads WHERE last_seq = $1", seq)
        transitions = await conn.fetchval("SELECT count(*) FROM transitions")
        return int(done), int(transitions)
    finally:
        await conn.close()


def apply_run(consumers: int, size: Size, redis_url: str, admin_url: str, tmp: Path) -> Drain:
    prefix = f"benchapply{consumers}{secrets.token_hex(2)}:"
    port = ingest_bench.free_port()
    with fresh_database(admin_url) as database_url:
        env = env_for(redis_url, prefix, database_url, port, tmp / "state")
        subprocess.run([*statusd(), "migrate"], env=env, check=True, capture_output=True)
        api = f"http://127.0.0.1:{port}"
        with processes([([*statusd(), "serve", "--consumers", "0"], env)], tmp):
            asyncio.run(wait_http(f"{api}/readyz"))
            asyncio.run(prefill(api, size))
        total = size.workloads * size.rounds
        consume_env = {**env, "STATUSD_SHARD_LEASE_MS": str(APPLY_LEASE_MS)}
        pids: list[int] = []
        with processes([([*statusd(), "consume"], consume_env)] * consumers, tmp, started=pids):
            result = asyncio.run(drain(redis_url, Keys(prefix), total, within=900, pids=pids))
        done, transitions = asyncio.run(applied(database_url, size.rounds))
        if done != size.workloads:
            raise SystemExit(f"only {done}/{size.workloads} workloads reached their last seq")
    print(
        f"  apply, {consumers} consume: {result.rate:,.0f} entries/s between "
        f"{WINDOW[0]:.0%} and {WINDOW[1]:.0%} applied ({total:,} entries in {result.seconds:.1f} s; "
        f"{transitions:,} transition rows; CPU per 1,000 entries: consume "
        f"{result.cpu_per_1000:.3f} s, PostgreSQL {result.postgres_per_1000:.3f} s)"
    )
    return result


def ingest_run(servers: int, size: Size, redis_url: str, tmp: Path, pin: bool) -> float:
    prefix = f"benchingest{servers}{secrets.token_hex(2)}:"
    ports = [ingest_bench.free_port() for _ in range(servers)]
    database_url = f"sqlite+aiosqlite:///{tmp}/ingest.db"  # never touched: no consumers
    commands = [
        (
            [*(ingest_bench.pinned(0) if pin else []), *statusd(), "serve", "--consumers", "0"],
            env_for(redis_url, prefix, database_url, port, tmp / "state"),
        )
        for port in ports
    ]
    loader = "wrk" if shutil.which("wrk") else "python"
    with processes(commands, tmp):
        for port in ports:
            asyncio.run(wait_http(f"http://127.0.0.1:{port}/healthz"))
        # Two load generators whatever the number of servers: the client side costs the same.
        loads = [
            subprocess.Popen(
                [
                    *(ingest_bench.pinned(1) if pin else []),
                    sys.executable,
                    str(ROOT / "bench" / "ingest.py"),
                    "--load",
                    "--port",
                    str(ports[n % servers]),
                    "--duration",
                    str(size.ingest_s),
                    "--concurrency",
                    str(size.concurrency // 2),
                    "--loader",
                    loader,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            for n in range(2)
        ]
        rate = 0.0
        for proc in loads:
            out, _ = proc.communicate(timeout=size.ingest_s + 120)
            result = orjson.loads(out)
            rate += float(result["requests"]) / float(result["seconds"])
    label = "1 serve, pinned (ceiling)" if pin else f"{servers} serve"
    print(f"  ingest, {label}: {rate:,.0f} heartbeats/s (load by {loader})")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small backlog, 3 s ingest runs")
    parser.add_argument(
        "--pg",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL admin URL (env BENCH_PG_URL): the script creates and drops its databases there",
    )
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    from statusd.redis_runtime import EmbeddedRedis

    print(
        f"scale-out, {os.cpu_count()} CPUs, backlog {size.workloads:,} workloads x "
        f"{size.rounds} heartbeats, ingest {size.ingest_s:.0f} s at c={size.concurrency}"
    )
    with tempfile.TemporaryDirectory(prefix="statusd-scale-") as tmp_name:
        tmp = Path(tmp_name)
        redis = EmbeddedRedis(tmp / "redis", appendonly=False)
        redis_url = redis.start()
        try:
            apply = {n: apply_run(n, size, redis_url, args.pg, tmp) for n in (1, 2)}
            ceiling = ingest_run(1, size, redis_url, tmp, pin=True)
            ingest = {n: ingest_run(n, size, redis_url, tmp, pin=False) for n in (1, 2)}
        finally:
            redis.stop()
    print()
    print("| what | 1 process | 2 processes | ratio | per-process ceiling |")
    print("|---|---|---|---|---|")
    # Per-process ceiling of apply: one core's worth of consume CPU per entry (PostgreSQL apart).
    ceiling_apply = 1000 / apply[1].cpu_per_1000
    print(
        f"| apply (entries/s, PostgreSQL) | {apply[1].rate:,.0f} | {apply[2].rate:,.0f} | "
        f"{apply[2].rate / apply[1].rate:.2f} | {ceiling_apply:,.0f} (one core of consume CPU) |"
    )
    print(
        f"| ingest (heartbeats/s) | {ingest[1]:,.0f} | {ingest[2]:,.0f} | "
        f"{ingest[2] / ingest[1]:.2f} | {ceiling:,.0f} |"
    )


if __name__ == "__main__":
    main()
