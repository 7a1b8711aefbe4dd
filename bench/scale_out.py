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
FULL = Size(workloads=2000, rounds=25, ingest_s=10.0, concurrency=64)


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
    `started`, if given, receives the pids (for CPU accounting from /proc)."""
    procs: list[subprocess.Popen[bytes]] = []
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


async def prefill(api: str, size: Size) -> None:
    """Register the workloads and push the backlog through the real ingest (no consumer runs)."""
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    ids = [f"nb-{i:05d}" for i in range(size.workloads)]
    tokens: dict[str, str] = {}
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as http:

        async def register(wid: str) -> None:
            async with (
                limit,
                http.post(
                    f"{api}/v1/workloads", json={"id": wid, "kind": "notebook"}, headers=auth
                ) as response,
            ):
                assert response.status == 201, await response.text()
                tokens[wid] = (await response.json())["heartbeat_token"]

        await asyncio.gather(*(register(w) for w in ids))
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


async def drain_rate(redis_url: str, keys: Keys, total: int, within: float) -> tuple[float, float]:
    """(entries/s from the first delivery to an empty group, seconds); polls the stream stats."""
    from statusd.redis_runtime import create_redis

    redis = create_redis(redis_url, 4)
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            stats = await stream_stats(redis, keys, SHARDS)
            # No group yet (the consumers are still starting): the whole stream is undelivered.
            lag = stats.length if stats.lag is None else stats.lag
            left = lag + stats.pending
            now = time.monotonic()
            # The clock starts with the first delivery, not the first ack: a consumer acks a
            # whole batch after its commits, so by the first ack much of the work is done.
            if first is None and lag < total:
                first = (now, left)
            if first is not None and left == 0:
                seconds = max(now - first[0], 1e-3)
                return first[1] / seconds, seconds
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


def apply_run(consumers: int, size: Size, redis_url: str, admin_url: str, tmp: Path) -> float:
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
        with processes([([*statusd(), "consume"], env)] * consumers, tmp):
            rate, seconds = asyncio.run(drain_rate(redis_url, Keys(prefix), total, within=900))
        done, transitions = asyncio.run(applied(database_url, size.rounds))
        if done != size.workloads:
            raise SystemExit(f"only {done}/{size.workloads} workloads reached their last seq")
    print(
        f"  apply, {consumers} consume: {rate:,.0f} entries/s ({total:,} entries in "
        f"{seconds:.1f} s; {transitions:,} transition rows in the database)"
    )
    return rate


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
    print(
        f"| apply (entries/s, PostgreSQL) | {apply[1]:,.0f} | {apply[2]:,.0f} | "
        f"{apply[2] / apply[1]:.2f} | {apply[1]:,.0f} |"
    )
    print(
        f"| ingest (heartbeats/s) | {ingest[1]:,.0f} | {ingest[2]:,.0f} | "
        f"{ingest[2] / ingest[1]:.2f} | {ceiling:,.0f} |"
    )


if __name__ == "__main__":
    main()
