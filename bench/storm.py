"""Transition storm: N RUNNING trainings report SUCCEEDED at once; how fast are they applied?

    .venv/bin/python bench/storm.py [--workloads 20000] [--with-sync]

One real `statusd serve` (ingest + its consumers) on PostgreSQL (BENCH_PG_URL, default
postgresql://postgres@127.0.0.1:5432/postgres; a fresh database per run, dropped after) and a
redis-server of its own. N training workloads are registered through the API and brought to
RUNNING by a first storm (not timed); then N SUCCEEDED heartbeats go through the real batch
endpoint (500 per request) and the clock runs from the first request to the moment the database
says all N are SUCCEEDED (and holds N SUCCEEDED transition rows and N outbox rows for them).

The baseline runs in the same run, on the same database and machine: plain asyncpg, 10
connections, one transaction per workload doing what a transition must (row lock, UPDATE, history
INSERT, outbox INSERT). `--with-sync` also runs a real `statusd worker` (Celery, queue sync, on the
same redis as broker) draining the outbox to a loopback aiohttp main API answering 204, beside
the storm. The machine is shared with whatever else runs: read the ratio, not the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-" + "s" * 32
API_TOKEN = "bench-api-token-" + "t" * 32
BATCH = 500
BASELINE_CONNECTIONS = 10
GOAL_RATIO = 0.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _statusd() -> str:
    return str(Path(sys.executable).with_name("statusd"))


@contextlib.asynccontextmanager
async def _database() -> AsyncIterator[str]:
    name = f"statusd_storm_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin = await asyncpg.connect(PG_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@contextlib.asynccontextmanager
async def _process(args: list[str], env: dict[str, str], log: Path) -> AsyncIterator[int]:
    proc = _spawn(args, env, log)
    try:
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            await asyncio.to_thread(proc.wait, 5)


@contextlib.asynccontextmanager
async def _main_api() -> AsyncIterator[str]:
    """A loopback main API that accepts every status PUT (what the sync worker drains to)."""

    async def put(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_put("/workloads/{id}/status", put)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _wait_ready(api: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{api}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise SystemExit(f"{api} did not become ready within {within}s")


async def _register(api: str, ids: list[str]) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    tokens: dict[str, str] = {}
    limit = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as http:

        async def one(wid: str) -> None:
            async with (
                limit,
                http.post(
                    f"{api}/v1/workloads", json={"id": wid, "kind": "training"}, headers=auth
                ) as response,
            ):
                if response.status != 201:
                    raise SystemExit(f"register {wid}: {response.status} {await response.text()}")
                tokens[wid] = (await response.json())["heartbeat_token"]

        await asyncio.gather(*(one(w) for w in ids))
    return tokens


async def _push(api: str, tokens: dict[str, str], status: str, seq: int) -> None:
    items = [
        {"token": token, "workload_id": wid, "status": status, "seq": seq}
        for wid, token in tokens.items()
    ]
    async with aiohttp.ClientSession() as http:

        async def one(chunk: list[dict[str, Any]]) -> None:
            async with http.post(f"{api}/v1/heartbeats:batch", json={"items": chunk}) as response:
                body = await response.json()
                if response.status != 200 or body["rejected"]:
                    raise SystemExit(f"batch ingest: {response.status} {body}")

        await asyncio.gather(*(one(items[i : i + BATCH]) for i in range(0, len(items), BATCH)))


async def _wait_state(db: asyncpg.Connection, state: str, n: int, within: float) -> float:
    """Seconds until `n` storm workloads are in `state` (polled every 20 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        done = await db.fetchval(
            "SELECT count(*) FROM workloads WHERE state = $1 AND id LIKE 'storm-%'", state
        )
        if done >= n:
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise SystemExit(f"only {done}/{n} workloads reached {state} within {within}s")


async def copy_for_baseline(db: asyncpg.Connection) -> list[str]:
    """The baseline's own rows: a copy of every storm workload, RUNNING, under another id."""
    await db.execute(
        "INSERT INTO workloads (id, kind, state, generation, version, labels, last_seq,"
        " state_changed_at, created_at, poll_failures) SELECT 'base-' || id, kind, state,"
        " generation, version, labels, last_seq, state_changed_at, created_at, poll_failures"
        " FROM workloads WHERE id LIKE 'storm-%'"
    )
    return [r["id"] for r in await db.fetch("SELECT id FROM workloads WHERE id LIKE 'base-%'")]


async def baseline(database_url: str, ids: list[str]) -> float:
    """Plain asyncpg: per workload one transaction with lock, UPDATE, history and outbox INSERT."""
    pool = await asyncpg.create_pool(
        database_url, min_size=BASELINE_CONNECTIONS, max_size=BASELINE_CONNECTIONS
    )
    assert pool is not None
    try:
        async with pool.acquire() as conn:  # back to RUNNING first (not timed)
            await conn.execute("UPDATE workloads SET state = 'RUNNING' WHERE id LIKE 'base-%'")
        todo = list(ids)

        async def worker() -> None:
            async with pool.acquire() as conn:
                while todo:
                    wid = todo.pop()
                    async with conn.transaction():
                        row = await conn.fetchrow(
                            "SELECT kind, state, version, generation FROM workloads "
                            "WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
                            wid,
                        )
                        await conn.execute(
                            "UPDATE workloads SET state = 'SUCCEEDED', version = $2, last_seq = 3,"
                            " state_changed_at = now(), last_seen_at = now() "
                            "WHERE id = $1 AND version = $3",
                            wid,
                            row["version"] + 1,
                            row["version"],
                        )
                        tid = await conn.fetchval(
                            "INSERT INTO transitions (workload_id, generation, kind, from_state,"
                            " to_state, source, actor, seq, observed_at, recorded_at) VALUES"
                            " ($1, $2, $3, $4, 'SUCCEEDED', 'push', 'heartbeat', 3, now(), now())"
                            " RETURNING id",
                            wid,
                            row["generation"],
                            row["kind"],
                            row["state"],
                        )
                        await conn.execute(
                            "INSERT INTO outbox (event_key, transition_id, workload_id, target,"
                            " destination, payload, status, attempts, next_attempt_at, created_at)"
                            " VALUES ($4, $1, $2, 'main', '', $3, 'pending', 0, now(), now())",
                            tid,
                            wid,
                            '{"state": "SUCCEEDED", "previous": "RUNNING"}',
                            f"transition:{tid}",
                        )

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(BASELINE_CONNECTIONS)))
        return len(ids) / (time.monotonic() - start)
    finally:
        await pool.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU the process used so far (Linux /proc): load-independent cost."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _profile(pid: int, out: Path, seconds: int) -> subprocess.Popen[bytes]:
    """py-spy (if installed in this venv) sampling the serve process while the storm runs."""
    spy = str(Path(sys.executable).with_name("py-spy"))
    args = [spy, "record", "-p", str(pid), "-o", str(out), "-d", str(seconds), "-r", "200"]
    fmt = {".json": "speedscope", ".txt": "raw"}.get(out.suffix, "flamegraph")
    return subprocess.Popen([*args, "--format", fmt])


async def run(
    workloads: int, with_sync: bool = False, profile: Path | None = None
) -> dict[str, Any]:
    """Measure the storm (and the baseline) once; returns rates, ratio, goal and notes."""
    from statusd.redis_runtime import EmbeddedRedis

    ids = [f"storm-{i:06d}" for i in range(workloads)]
    with tempfile.TemporaryDirectory(prefix="statusd-storm-") as tmp_name:
        tmp = Path(tmp_name)
        redis = EmbeddedRedis(tmp / "redis", appendonly=False)
        redis_url = redis.start()
        try:
            async with _database() as database_url, _main_api() as main_api:
                port = _free_port()
                env = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")},
                    "STATUSD_SECRET": SECRET,
                    "STATUSD_API_TOKEN": API_TOKEN,
                    "STATUSD_REDIS_URL": redis_url,
                    "STATUSD_REDIS_PREFIX": f"storm{secrets.token_hex(2)}:",
                    "STATUSD_DATABASE_URL": database_url,
                    "STATUSD_PORT": str(port),
                    "STATUSD_STATE_DIR": str(tmp / "state"),
                    "STATUSD_LOG_LEVEL": "WARNING",
                    "STATUSD_LOG_FORMAT": "json",
                    "STATUSD_REDIS_MAX_CONNECTIONS": "256",
                    # Without a URL sync is off and outbox rows just stay pending.
                    "STATUSD_MAIN_API_URL": main_api if with_sync else "",
                }
                await asyncio.to_thread(
                    subprocess.run,
                    [_statusd(), "migrate"],
                    env=env,
                    check=True,
                    capture_output=True,
                )
                api = f"http://127.0.0.1:{port}"
                async with contextlib.AsyncExitStack() as stack:
                    serve = await stack.enter_async_context(
                        _process([_statusd(), "serve"], env, tmp / "serve.log")
                    )
                    if with_sync:
                        await stack.enter_async_context(
                            _process(
                                [_statusd(), "worker", "--queues", "sync"], env, tmp / "worker.log"
                            )
                        )
                    await _wait_ready(api)
                    db = await asyncpg.connect(database_url)
                    try:
                        tokens = await _register(api, ids)
                        await _push(api, tokens, "RUNNING", 1)
                        await _wait_state(db, "RUNNING", workloads, within=1800)
                        base_ids = await copy_for_baseline(db)
                        # Baseline before and after the storm: the machine's load drifts.
                        base_rates = [await baseline(database_url, base_ids)]
                        profiler = _profile(serve, profile, seconds=60) if profile else None
                        start, cpu = time.monotonic(), _cpu_seconds(serve)
                        await _push(api, tokens, "SUCCEEDED", 2)
                        await _wait_state(db, "SUCCEEDED", workloads, within=1800)
                        seconds = time.monotonic() - start
                        cpu_ms = (_cpu_seconds(serve) - cpu) * 1000 / workloads
                        if profiler is not None:
                            profiler.send_signal(2)  # py-spy writes its profile on SIGINT
                            await asyncio.to_thread(profiler.wait, 60)
                        base_rates.append(await baseline(database_url, base_ids))
                        rows = await db.fetchval(
                            "SELECT count(*) FROM transitions WHERE to_state = 'SUCCEEDED'"
                            " AND workload_id LIKE 'storm-%'"
                        )
                        outbox = await db.fetchval(
                            "SELECT count(*) FROM outbox o JOIN transitions t"
                            " ON t.id = o.transition_id WHERE t.to_state = 'SUCCEEDED'"
                            " AND t.workload_id LIKE 'storm-%'"
                        )
                        synced = await db.fetchval(
                            "SELECT count(*) FROM outbox WHERE status = 'synced'"
                        )
                        if rows != workloads or outbox != workloads:
                            raise SystemExit(
                                f"{rows} SUCCEEDED transitions, {outbox} outbox rows "
                                f"for {workloads} workloads"
                            )
                    finally:
                        await db.close()
                statusd_rate = workloads / seconds
                base_rate = sum(base_rates) / len(base_rates)
        finally:
            redis.stop()
    ratio = statusd_rate / base_rate
    variant = (
        f"with a sync worker draining beside it ({synced} outbox rows synced by the end)"
        if with_sync
        else "no sync worker"
    )
    return {
        "statusd": f"{statusd_rate:,.0f}/s",
        "baseline": f"{base_rate:,.0f}/s",
        "ratio": round(ratio, 3),
        "goal_ratio": 0.35 if with_sync else GOAL_RATIO,
        "notes": (
            f"{workloads} RUNNING -> SUCCEEDED heartbeats via POST /v1/heartbeats:batch ({BATCH} per "
            f"request), one `statusd serve`, PostgreSQL, {variant}; applied in {seconds:.1f} s "
            f"(until the DB says all SUCCEEDED), serve CPU {cpu_ms:.2f} ms per transition "
            f"(ingest included); baseline: asyncpg, {BASELINE_CONNECTIONS} "
            f"connections, lock + UPDATE + history + outbox per transaction, on copies of the "
            f"rows, mean of a run before and after the storm "
            f"({', '.join(f'{r:,.0f}/s' for r in base_rates)}); {os.cpu_count()} CPUs"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", type=int, default=20_000)
    parser.add_argument("--with-sync", action="store_true", help="a sync worker drains beside it")
    parser.add_argument("--profile", type=Path, help="py-spy the serve process into this file")
    args = parser.parse_args()
    result = asyncio.run(run(args.workloads, with_sync=args.with_sync, profile=args.profile))
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
