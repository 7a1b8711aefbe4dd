"""Registration benchmark: one at a time vs `POST /v1/workloads:batch`, in the same run.

    .venv/bin/python bench/registration.py [--quick] [-n N] [--beat-rate R] [--baseline-bin PATH]

PATH (or env BENCH_BASELINE_STATUSD) is another build's `statusd` executable, e.g. a checkout of
the code before a change with its own venv: `.../.venv/bin/statusd`.

Each phase runs a real `statusd serve` (PostgreSQL, a fresh migrated database, the script's own
redis-server) on loopback and registers N new trainings:

  single           POST /v1/workloads, 32 in flight (as bench/detection.py's fleet does)
  batch            POST /v1/workloads:batch, STATUSD_MAX_BATCH_ITEMS items per request, 2 in flight
  single, beating  the single route again while a fleet of --beat-rate x 10 workloads (registered
                   in batches first) heartbeats every 10 s through POST /v1/heartbeats:batch,
                   as bench/detection.py's fleet does: --beat-rate per second (default 20,000;
                   --quick: 500, every 2 s)
  batch, beating   the batch route under the same heartbeats
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
import contextlib
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

import detection  # noqa: E402  (the fleet's heartbeat client)
import ingest as ingest_bench  # noqa: E402
import scale_out  # noqa: E402  (processes, fresh databases, env, CPU accounting)

SINGLE_IN_FLIGHT = 32
BATCH_IN_FLIGHT = 2
BATCH_ITEMS = 1000
WARM_UP = 200  # registrations before the session count starts (the pool fills)
# What statusd tells a fleet to keep (STATUSD_HEARTBEAT_TTL / 3 at the default TTL): a fleet
# heartbeating at R per second is R x this many workloads.
HEARTBEAT_INTERVAL_S = 10.0  # each fleet workload's; --quick: QUICK_INTERVAL_S
QUICK_INTERVAL_S = 2.0  # a fleet of beat rate x 2 s settles (every workload RUNNING) in ~2 s
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
    idle_cores: float = 0.0  # the machine's idle CPUs over the measured registrations


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
    consume: int = 0,
    beat_interval: float = HEARTBEAT_INTERVAL_S,
) -> Phase:
    prefix = f"benchreg{secrets.token_hex(3)}:"
    port = ingest_bench.free_port()
    with scale_out.fresh_database(admin_url) as database_url:
        env = scale_out.env_for(redis_url, prefix, database_url, port, tmp / "state")
        env["STATUSD_MAX_HEARTBEATS_PER_S"] = str(max(beat_rate, 2000.0))
        # statusd answers each heartbeat with its next interval, at least a third of the TTL, and
        # the fleet's client follows it: the TTL makes the fleet beat every `beat_interval`.
        env["STATUSD_HEARTBEAT_TTL"] = str(3 * beat_interval)
        scale_out.subprocess.run([*bin_path, "migrate"], env=env, check=True, capture_output=True)
        api = f"http://127.0.0.1:{port}"
        pids: list[int] = []
        # With `consume`, the layout a busy deployment runs (README, "Deploying"): `serve`
        # only takes requests, separate `consume` processes apply the stream.
        serve = [*bin_path, "serve", *(["--consumers", "0"] if consume else [])]
        commands = [(serve, env), *[([*bin_path, "consume"], env)] * consume]
        with scale_out.processes(commands, tmp, started=pids):
            asyncio.run(scale_out.wait_http(f"{api}/readyz"))
            # The CPU column is serve's: the registrations' cost, with its heartbeat share.
            return asyncio.run(
                _measure(
                    name,
                    api,
                    register,
                    n,
                    admin_url,
                    database_url,
                    pids[:1],
                    beat_rate,
                    beat_interval,
                )
            )


async def _measure(
    name: str,
    api: str,
    register: Register,
    n: int,
    admin_url: str,
    database_url: str,
    pids: list[int],
    beat_rate: float,
    beat_interval: float,
) -> Phase:
    database = database_url.rsplit("/", 1)[1]
    run = secrets.token_hex(3)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        fleet: detection.Fleet | None = None
        beats: asyncio.Task[None] | None = None
        if beat_rate > 0:
            size = int(beat_rate * beat_interval)
            fleet = detection.Fleet(
                ids=[f"fleet-{run}-{i:06d}" for i in range(size)], interval=beat_interval
            )
            fleet.tokens.update(await register_batch(http, api, fleet.ids))
            beats = asyncio.create_task(detection.heartbeat_loop(http, api, fleet))
            # Steady heartbeats, as the goal says: each workload's first one is a transition
            # (PENDING -> RUNNING), and 200,000 of them are a storm of their own, so the
            # registrations below start once every one is applied.
            conn = await asyncpg.connect(database_url)
            try:
                await detection.settled(conn, size, within=120 + size / 50)
            finally:
                await conn.close()
            detection.beating(beats)
        try:
            await register(http, api, [f"warm-{run}-{i:05d}" for i in range(WARM_UP)])
            ids = [f"reg-{run}-{i:06d}" for i in range(n)]
            before = await sessions(admin_url, database)
            cpu0 = scale_out.cpu_seconds(pids)
            sent0 = fleet.sent if fleet is not None else 0
            idle0 = detection.machine_idle_s()
            t0 = time.monotonic()
            await register(http, api, ids)
            seconds = time.monotonic() - t0
            idle = (detection.machine_idle_s() - idle0) / seconds
            sent = fleet.sent - sent0 if fleet is not None else 0
            cpu = scale_out.cpu_seconds(pids) - cpu0
            after = await sessions(admin_url, database)
            if beats is not None:
                detection.beating(beats)  # the client kept going: its rate is what it sent
        finally:
            if beats is not None:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats
    # sessions() connects to the admin database: the count is the phase's database alone.
    return Phase(
        name,
        n,
        round(seconds, 2),
        round(n / seconds, 1),
        after - before,
        round(cpu / n * 1000, 3),
        round(sent / seconds, 0) if fleet is not None else 0.0,
        round(idle, 2),
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
    parser.add_argument(
        "--consume",
        type=int,
        default=0,
        help="every phase on `serve --consumers 0` plus this many `statusd consume` processes",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    n = args.n or (300 if args.quick else 5000)
    beat_rate = args.beat_rate if args.beat_rate is not None else (500.0 if args.quick else 20000.0)
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
                        consume=args.consume,
                    )
                )
            for name, register in (("single", register_single), ("batch", register_batch)):
                phases.append(
                    phase(name, ours, register, n, redis_url, args.pg, tmp, consume=args.consume)
                )
            if beat_rate > 0:
                for name, register in (
                    ("single, beating", register_single),
                    ("batch, beating", register_batch),
                ):
                    phases.append(
                        phase(
                            name,
                            ours,
                            register,
                            n,
                            redis_url,
                            args.pg,
                            tmp,
                            beat_rate,
                            consume=args.consume,
                            beat_interval=QUICK_INTERVAL_S if args.quick else HEARTBEAT_INTERVAL_S,
                        )
                    )
        finally:
            redis.stop()
    by = {p.name: p for p in phases}
    print(f"\nregistration, {os.cpu_count()} CPUs, {n:,} registrations per phase")
    print(
        "| phase | registrations/s | serve CPU ms each | new PG sessions | heartbeats/s "
        "| idle cores |"
    )
    print("|---|---|---|---|---|---|")
    for p in phases:
        print(
            f"| {p.name} | {p.rate:,.0f} | {p.serve_cpu_ms:.2f} | {p.new_sessions} "
            f"| {p.beats_per_s:,.0f} | {p.idle_cores:.2f} |"
        )
    ratios: dict[str, float] = {"batch / single": by["batch"].rate / by["single"].rate}
    if "baseline single" in by:
        ratios["single / baseline single"] = by["single"].rate / by["baseline single"].rate
    if "single, beating" in by:
        ratios["single beating / single"] = by["single, beating"].rate / by["single"].rate
        ratios["batch beating / batch"] = by["batch, beating"].rate / by["batch"].rate
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
                "consume": args.consume,
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
