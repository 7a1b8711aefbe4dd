"""Registration benchmark: one at a time vs `POST /v1/workloads:batch`, in the same run.

    .venv/bin/python bench/registration.py [--quick] [-n N] [--beat-rate R] [--baseline-bin PATH]

PATH (or env BENCH_BASELINE_STATUSD) is another build's `statusd` executable, e.g. a checkout of
the code before a change with its own venv: `.../.venv/bin/statusd`.

Each phase runs a real `statusd serve` (PostgreSQL, a fresh migrated database, the script's own
redis-server) on loopback and registers N new trainings:

  single           POST /v1/workloads, 32 in flight (as bench/detection.py's fleet does)
  batch            POST /v1/workloads:batch, STATUSD_MAX_BATCH_ITEMS items per request, 2 in flight
  single, beating  the single route again while the workloads registered by the batch phase
                   heartbeat through POST /v1/heartbeats:batch at --beat-rate per second
  baseline single  (with --baseline-bin) the single route of another statusd build (the code
                   before this change), same machine, same run

Besides the rate, each phase reports the new PostgreSQL sessions it opened after a warm-up
(`pg_stat_database.sessions` of the phase's database): a pool that keeps its connections opens
none per registration in steady state. Prints a table; exits non-zero when a registration
failed, never because a figure was slow. Needs PostgreSQL (BENCH_PG_URL, default
postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ingest as ingest_bench  # noqa: E402
import scale_out  # noqa: E402  (processes, fresh databases, env, CPU accounting)

SINGLE_IN_FLIGHT = 32
BATCH_IN_FLIGHT = 2
BATCH_ITEMS = 1000
WARM_UP = 200  # registrations before the session count starts (the pool fills)
AUTH = {"Authorization": f"Bearer {scale_out.API_TOKEN}"}


@dataclass
class Phase:
    name: str
    registered: int
    seconds: float
    rate: float
    new_sessions: int  # PostgreSQL sessions opened after the warm-up
    serve_cpu_ms: float  # serve CPU per registration
    beats_per_s: float = 0.0


async def sessions(admin_url: str, database: str) -> int:
    conn = await asyncpg.connect(admin_url)
    try:
        value = await conn.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = $1", database
        )
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(value or 0)
    finally:
        await conn.close()


async def register_single(http: aiohttp.ClientSession, api: str, ids: list[str]) -> dict[str, str]:
    limit = asyncio.Semaphore(SINGLE_IN_FLIGHT)
    tokens: dict[str, str] = {}

    async def one(wid: str) -> None:
        body = {"id": wid, "kind": "training"}
        async with limit, http.post(f"{api}/v1/workloads", json=body, headers=AUTH) as resp:
            if resp.status != 201:
                raise SystemExit(f"register {wid}: HTTP {resp.status} {await resp.text()}")
            tokens[wid] = (await resp.json())["heartbeat_token"]

    await asyncio.gather(*(one(w) for w in ids))
    return tokens


async def register_batch(http: aiohttp.ClientSession, api: str, ids: list[str]) -> dict[str, str]:
    limit = asyncio.Semaphore(BATCH_IN_FLIGHT)
    tokens: dict[str, str] = {}

    async def chunk(part: list[str]) -> None:
        body = {"items": [{"id": wid, "kind": "training"} for wid in part]}
        async with limit, http.post(f"{api}/v1/workloads:batch", json=body, headers=AUTH) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise SystemExit(f"batch: HTTP {resp.status} {answer}")
            for wid, result in zip(part, answer["results"], strict=True):
                if result["status"] != 201:
                    raise SystemExit(f"batch item {wid}: {result}")
                tokens[wid] = result["workload"]["heartbeat_token"]

    await asyncio.gather(
        *(chunk(ids[i : i + BATCH_ITEMS]) for i in range(0, len(ids), BATCH_ITEMS))
    )
    return tokens


async def beat(
    http: aiohttp.ClientSession, api: str, tokens: dict[str, str], rate: float, stop: asyncio.Event
) -> int:
    """Heartbeats at `rate` per second in batches of 500, until `stop`; returns how many sent."""
    ids = list(tokens)
    seq = 0
    sent = 0
    per_tick = max(1, int(rate / 10))
    start = time.monotonic()
    tick = 0
    while not stop.is_set():
        seq += 1
        pos = (tick * per_tick) % len(ids)
        wave = [ids[(pos + i) % len(ids)] for i in range(per_tick)]
        for i in range(0, len(wave), 500):
            items = [
                {"workload_id": w, "token": tokens[w], "status": "RUNNING", "seq": seq}
                for w in wave[i : i + 500]
            ]
            async with http.post(f"{api}/v1/heartbeats:batch", json={"items": items}) as resp:
                await resp.read()
            sent += len(items)
        tick += 1
        await asyncio.sleep(max(0.0, start + tick / 10 - time.monotonic()))
    return sent


Register = Callable[[aiohttp.ClientSession, str, list[str]], Awaitable[dict[str, str]]]


def phase(
    name: str,
    bin_path: list[str],
    register: Register,
    n: int,
    redis_url: str,
    admin_url: str,
    tmp: Path,
    beat_rate: float = 0.0,
) -> Phase:
    prefix = f"benchreg{secrets.token_hex(3)}:"
    port = ingest_bench.free_port()
    with scale_out.fresh_database(admin_url) as database_url:
        database = database_url.rsplit("/", 1)[1]
        env = scale_out.env_for(redis_url, prefix, database_url, port, tmp / "state")
        env["STATUSD_MAX_HEARTBEATS_PER_S"] = str(max(beat_rate * 2, 2000.0))
        scale_out.subprocess.run([*bin_path, "migrate"], env=env, check=True, capture_output=True)
        api = f"http://127.0.0.1:{port}"
        pids: list[int] = []
        with scale_out.processes([([*bin_path, "serve"], env)], tmp, started=pids):
            asyncio.run(scale_out.wait_http(f"{api}/readyz"))
            return asyncio.run(
                _measure(name, api, register, n, admin_url, database, pids, beat_rate)
            )


async def _measure(
    name: str,
    api: str,
    register: Register,
    n: int,
    admin_url: str,
    database: str,
    pids: list[int],
    beat_rate: float,
) -> Phase:
    run = secrets.token_hex(3)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        stop = asyncio.Event()
        beating: asyncio.Task[int] | None = None
        if beat_rate > 0:
            fleet = [f"fleet-{run}-{i:06d}" for i in range(int(beat_rate * 2))]
            tokens = await register_batch(http, api, fleet)
            beating = asyncio.create_task(beat(http, api, tokens, beat_rate, stop))
            await asyncio.sleep(3)  # the heartbeats settle to their rate
        await register(http, api, [f"warm-{run}-{i:05d}" for i in range(WARM_UP)])
        ids = [f"reg-{run}-{i:06d}" for i in range(n)]
        before = await sessions(admin_url, database)
        cpu0 = scale_out.cpu_seconds(pids)
        t0 = time.monotonic()
        await register(http, api, ids)
        seconds = time.monotonic() - t0
        cpu = scale_out.cpu_seconds(pids) - cpu0
        after = await sessions(admin_url, database)
        beats = 0
        if beating is not None:
            stop.set()
            beats = await beating
    # sessions() connects to the admin database: the count is the phase's database alone.
    return Phase(
        name,
        n,
        round(seconds, 2),
        round(n / seconds, 1),
        after - before,
        round(cpu / n * 1000, 3),
        round(beats / seconds, 0) if beating is not None else 0.0,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("-n", type=int, default=None, help="registrations per phase")
    parser.add_argument(
        "--beat-rate", type=float, default=None, help="heartbeats/s during 'single, beating'"
    )
    parser.add_argument(
        "--baseline-bin",
        type=Path,
        default=os.environ.get("BENCH_BASELINE_STATUSD") or None,
        help="another build's statusd executable (env BENCH_BASELINE_STATUSD): its single "
        "route measured in the same run",
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    n = args.n or (300 if args.quick else 5000)
    beat_rate = args.beat_rate if args.beat_rate is not None else (500.0 if args.quick else 5000.0)
    ours = scale_out.statusd()
    phases: list[Phase] = []
    from statusd.redis_runtime import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="statusd-reg-") as tmp_name:
        tmp = Path(tmp_name)
        redis = EmbeddedRedis(tmp / "redis", appendonly=False)
        redis_url = redis.start()
        try:
            if args.baseline_bin is not None:
                phases.append(
                    phase(
                        "baseline single",
                        [str(args.baseline_bin)],
                        register_single,
                        n,
                        redis_url,
                        args.pg,
                        tmp,
                    )
                )
            phases.append(phase("single", ours, register_single, n, redis_url, args.pg, tmp))
            phases.append(phase("batch", ours, register_batch, n, redis_url, args.pg, tmp))
            if beat_rate > 0:
                phases.append(
                    phase(
                        "single, beating",
                        ours,
                        register_single,
                        n,
                        redis_url,
                        args.pg,
                        tmp,
                        beat_rate,
                    )
                )
        finally:
            redis.stop()
    by = {p.name: p for p in phases}
    print(f"\nregistration, {os.cpu_count()} CPUs, {n:,} registrations per phase")
    print("| phase | registrations/s | serve CPU ms each | new PG sessions | heartbeats/s |")
    print("|---|---|---|---|---|")
    for p in phases:
        print(
            f"| {p.name} | {p.rate:,.0f} | {p.serve_cpu_ms:.2f} | {p.new_sessions} "
            f"| {p.beats_per_s:,.0f} |"
        )
    ratios: dict[str, float] = {"batch / single": by["batch"].rate / by["single"].rate}
    if "baseline single" in by:
        ratios["single / baseline single"] = by["single"].rate / by["baseline single"].rate
    if "single, beating" in by:
        ratios["single beating / single"] = by["single, beating"].rate / by["single"].rate
    for label, value in ratios.items():
        print(f"{label}: {value:.2f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    written = args.out / f"registration-{stamp}{'-quick' if args.quick else ''}.json"
    written.write_text(
        json.dumps(
            {
                "n": n,
                "beat_rate": beat_rate,
                "phases": [asdict(p) for p in phases],
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"written: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
