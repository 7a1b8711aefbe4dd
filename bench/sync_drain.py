"""Sync drain benchmark: statusd's outbox drain against a plain aiohttp PUT loop, in one run.

    .venv/bin/python bench/sync_drain.py [--rows 5000] [--concurrency 32] [--delay-ms 5]

Both sides send the same rows to the same loopback main API (a subprocess answering each PUT
after `--delay-ms`), with the same number of requests in flight:
  plain    an aiohttp PUT loop over an in-memory list: no database at all (the ceiling)
  statusd  statusd.sync.drain.drain() over a freshly migrated PostgreSQL database holding the
           rows as PENDING outbox rows (one per workload, plus a second row for a tenth of the
           workloads so per-workload order is exercised), with STATUSD_DB_POOL_SIZE at its default
It also reports `pg_stat_database.sessions` opened during the drain (the goal is none per row),
and the CPU each side spent per row: this process's during the plain loop and during the drain,
and the drain's PostgreSQL backends' (read from /proc, so only with PostgreSQL on this host).
Needs PostgreSQL (BENCH_PG_URL, default postgresql://postgres@127.0.0.1:5432/postgres); creates
and drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# -- the main API peer (a subprocess: `sync_drain.py --serve PORT DELAY_MS`) ----------------------
def serve(port: int, delay_ms: float, error_ratio: float) -> None:
    import random

    import uvloop
    from aiohttp import web

    chance = random.Random(7)
    wire = {"now": 0, "peak": 0}  # requests in the handler now / at most since the last reset

    async def put_status(request: web.Request) -> web.Response:
        wire["now"] += 1
        wire["peak"] = max(wire["peak"], wire["now"])
        try:
            await request.read()
            await asyncio.sleep(delay_ms / 1000)
            if chance.random() < error_ratio:
                return web.json_response({"error": "injected"}, status=503)
            return web.json_response({"status": "ok"})
        finally:
            wire["now"] -= 1

    async def peak(request: web.Request) -> web.Response:
        """The most requests in flight at once since the last `?reset=1`."""
        value = wire["peak"]
        if request.query.get("reset"):
            wire["peak"] = wire["now"]
        return web.json_response({"peak": value})

    app = web.Application()
    app.router.add_put("/workloads/{workload_id}/status", put_status)
    app.router.add_get("/peak", peak)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the peer subprocess accepts connections (bounded)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("peer did not start") from None
            time.sleep(0.05)


@contextlib.contextmanager
def main_api(delay_ms: float, error_ratio: float = 0.0) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(delay_ms), str(error_ratio)], cwd=ROOT
    )
    try:
        wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


# -- the database ---------------------------------------------------------------------------------
def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _admin(sql: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(ADMIN_URL))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def bench_database() -> AsyncIterator[str]:
    name = f"statusd_bench_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        env = {**os.environ, "STATUSD_DATABASE_URL": url}
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        yield url
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def workload_rows(rows: int) -> list[tuple[str, int]]:
    """(workload id, transition id) in transition order: a tenth of the workloads get two rows."""
    workloads = max(1, rows * 10 // 11)
    out = [(f"bench-{i:06d}", i + 1) for i in range(workloads)]
    out += [(f"bench-{i:06d}", workloads + i + 1) for i in range(rows - workloads)]
    return out


def payload(workload_id: str, transition_id: int) -> dict[str, Any]:
    return {
        "workload_id": workload_id,
        "state": "SUCCEEDED",
        "previous": "RUNNING",
        "changed_at": datetime.now(UTC).isoformat(),
        "transition_id": transition_id,
        "source": "push",
        "reason": None,
    }


async def seed_outbox(url: str, rows: list[tuple[str, int]]) -> None:
    import asyncpg

    from statusd.outbox_writer import transition_key

    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        now = datetime.now(UTC)
        await conn.copy_records_to_table(
            "outbox",
            columns=[
                "event_key",
                "transition_id",
                "workload_id",
                "target",
                "destination",
                "payload",
                "status",
                "attempts",
                "next_attempt_at",
                "created_at",
            ],
            records=[
                (
                    transition_key(t),
                    t,
                    w,
                    "main",
                    "",
                    json.dumps(payload(w, t)),
                    "pending",
                    0,
                    now,
                    now,
                )
                for w, t in rows
            ],
        )
    finally:
        await conn.close()


async def sessions(url: str) -> int:
    name = url.rsplit("/", 1)[1]
    return int(await _admin(f"SELECT sessions FROM pg_stat_database WHERE datname = '{name}'") or 0)


# -- the two contenders ---------------------------------------------------------------------------
def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU of a process (this one by default)."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def backends_cpu(url: str) -> float | None:
    """CPU the database's PostgreSQL backends have used so far (the drain's pooled connections);
    None when they are not processes of this host."""
    import asyncpg
    import psutil

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(_asyncpg_dsn(ADMIN_URL))
    try:
        pids = [
            r["pid"]
            for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
        ]
    finally:
        await conn.close()
    try:
        return sum(cpu_seconds(pid) for pid in pids)
    except psutil.Error:
        return None


async def plain_put_loop(base: str, rows: list[tuple[str, int]], concurrency: int) -> float:
    import aiohttp
    import orjson

    queue = iter(rows)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def sender() -> None:
            for workload_id, transition_id in queue:
                body = orjson.dumps(payload(workload_id, transition_id))
                headers = {
                    "Content-Type": "application/json",
                    "Idempotency-Key": str(transition_id),
                }
                for _ in range(100):  # a 5xx is retried at once: the plain loop has no backoff
                    async with session.put(
                        f"{base}/workloads/{workload_id}/status", data=body, headers=headers
                    ) as resp:
                        await resp.read()
                        if resp.status < 300:
                            break
                        if resp.status < 500:
                            raise RuntimeError(f"plain loop got HTTP {resp.status}")

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return time.perf_counter() - started


async def peak_in_flight(base: str, *, reset: bool = False) -> int:
    """The most requests the main API had in flight at once (since the last reset)."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/peak", params={"reset": "1"} if reset else {}) as resp:
            return int((await resp.json())["peak"])


async def statusd_drain(
    base: str, url: str, rows: list[tuple[str, int]], concurrency: int, error_ratio: float = 0.0
) -> dict[str, Any]:
    import logging

    import structlog

    from statusd.db import create_engine
    from statusd.settings import Settings
    from statusd.sync.drain import drain

    # Not one WARNING line per injected 5xx retry on the bench's terminal.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    settings = Settings(
        database_url=url,
        main_api_url=base,
        sync_concurrency=concurrency,
        # With injected 5xx, enough in-run retries that every row gets through in one run.
        sync_attempts=20 if error_ratio else 5,
        sync_budget=60.0,
        secret="bench-secret-" + "s" * 32,
        api_token="bench-token-" + "t" * 32,
    )
    # The way the worker builds it (statusd.runtime): the default pool size.
    engine = create_engine(url, pool_size=settings.db_pool_size)
    try:
        # Warm the pool's first connection so the count below is about the drain itself.
        async with engine.connect():
            pass
        before = await sessions(url)
        backends_before = await backends_cpu(url)
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        report = await drain(engine, settings)
        while report.deferred:  # gave up for this run: the next run (the beat's) takes it
            await asyncio.sleep(0.1)
            await _due_now(engine)
            more = await drain(engine, settings)
            report.delivered += more.delivered
            report.deferred = more.deferred
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_before
        # Before the pool closes: its backends' CPU is the drain's (the warm-up's is in before).
        backends_after = await backends_cpu(url)
        after = await sessions(url)
    finally:
        await engine.dispose()
    postgres = (
        backends_after - backends_before
        if backends_after is not None and backends_before is not None
        else None
    )
    if report.delivered != len(rows):
        raise RuntimeError(f"drain delivered {report.delivered} of {len(rows)}: {report}")
    return {
        "seconds": elapsed,
        "new_sessions": after - before,
        "report": report.as_dict(),
        "cpu_s": cpu,
        "postgres_cpu_s": postgres,
    }


async def _due_now(engine: Any) -> None:
    """What waiting for the next beat would do, without the wait (on the drain's own pool)."""
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE outbox SET next_attempt_at = now() WHERE status = 'pending'")
        )


async def run(
    rows_n: int, concurrency: int, delay_ms: float, error_ratio: float = 0.0
) -> dict[str, Any]:
    rows = workload_rows(rows_n)
    with main_api(delay_ms, error_ratio) as base:
        plain_cpu = cpu_seconds()
        plain_s = await plain_put_loop(base, rows, concurrency)
        plain_cpu = cpu_seconds() - plain_cpu
        async with bench_database() as url:
            await seed_outbox(url, rows)
            await peak_in_flight(base, reset=True)
            result = await statusd_drain(base, url, rows, concurrency, error_ratio)
            statusd_peak = await peak_in_flight(base)
    plain_rate = len(rows) / plain_s
    statusd_rate = len(rows) / result["seconds"]
    return {
        "rows": len(rows),
        "concurrency": concurrency,
        "delay_ms": delay_ms,
        "error_ratio": error_ratio,
        "plain_put_loop_per_s": round(plain_rate, 1),
        "statusd_drain_per_s": round(statusd_rate, 1),
        "ratio": round(statusd_rate / plain_rate, 3),
        "new_db_sessions": result["new_sessions"],
        "statusd_peak_in_flight": statusd_peak,
        "plain_cpu_ms_per_row": round(plain_cpu / len(rows) * 1000, 3),
        "statusd_cpu_ms_per_row": round(result["cpu_s"] / len(rows) * 1000, 3),
        "postgres_cpu_ms_per_row": (
            round(result["postgres_cpu_s"] / len(rows) * 1000, 3)
            if result["postgres_cpu_s"] is not None
            else None
        ),
        "goal_ratio": 0.3 if error_ratio else 0.6,
        "statusd": f"{statusd_rate:,.0f} rows/s",
        "baseline": f"{plain_rate:,.0f} PUTs/s",
        "notes": f"{result['new_sessions']} new PostgreSQL sessions for {len(rows)} rows; at most "
        f"{statusd_peak} requests in flight at the main API (ceiling {concurrency})",
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--error-ratio", type=float, default=0.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.rows, args.concurrency, args.delay_ms, args.error_ratio))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
