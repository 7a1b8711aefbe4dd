"""CPU per 1,000 steady heartbeats: statusd against the naive ingest, measured in one run (goal:
statusd <= 2x the naive figure).

    .venv/bin/python bench/steady_cpu.py [--workloads 1000] [--duration 8] [--rounds 40] [--quick]
    .venv/bin/python bench/steady_cpu.py --rates 100 1000 20000 [--paced-s 10] [--repeat 2]
        [--baseline-src DIR]

statusd  `statusd serve` as the README starts it (ingest and its in-process consumers), PostgreSQL
         (a fresh database), W trainings registered and RUNNING, so their state is cached. wrk
         sends steady RUNNING heartbeats, each round a newer seq for every workload, for D
         seconds. The CPU of serve + its redis-server is counted from the start of the load until
         the stream is fully applied (lag and pending 0), per accepted heartbeat: taking AND
         applying it. PostgreSQL's CPU is reported beside it (steady heartbeats write no SQL).
naive    bench/ingest.py's `pipeline` server (parse, one XADD + ZADD pipeline, no checks, nothing
         applied afterwards) with the same requests: CPU of the server + its redis-server over the
         load, per accepted heartbeat.

Both as single requests (POST /v1/heartbeats) and through the batch endpoint
(100 heartbeats per request), as fast as they are taken; and, with `--rates 100 1000 20000`, paced
at each rate for `--paced-s` seconds (single requests up to 1,000/s, batches of 100 above: one
Python client cannot send 20,000 single requests a second), one `serve` and one naive server
taking the rates in turn, so the costs that do not shrink with the rate (wake-ups, timers,
small batches) are counted over the same window as the heartbeats. `--repeat` runs it again;
`--baseline-src DIR` also runs another commit's `statusd` package (DIR/statusd, e.g. from
`git archive <commit> statusd | tar -x -C DIR`) in each run, with this venv's libraries. The
unpaced load is wrk's when installed, else bench/ingest.py's Python client. Each server is pinned
to CPU 0 and the load to CPU 1; each scenario
gets a redis-server of its own, unpinned, so its CPU is its scenario's. Prints one table with
the ratios, writes bench/results/<UTC time>-steady-cpu.json, exits non-zero if a run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ingest as ingest_bench  # noqa: E402  (servers, wrk, ports)
import scale_out  # noqa: E402  (statusd processes, fresh databases, CPU from /proc)

from statusd.ingest.streams import stream_stats  # noqa: E402
from statusd.keys import Keys  # noqa: E402
from statusd.redis_runtime import EmbeddedRedis, create_redis  # noqa: E402

BATCH_ITEMS = ingest_bench.BATCH_ITEMS
CONCURRENCY = 64


@dataclass(frozen=True)
class Run:
    heartbeats: int  # accepted by the server (2xx answers x heartbeats per request)
    load_s: float  # wrk's duration
    applied_s: float  # from the load's start until the stream was applied (statusd only)
    cpu_per_1000: float  # server (+ in-process consumers) + its redis-server, CPU s per 1,000
    server_per_1000: float
    redis_per_1000: float
    postgres_per_1000: float


def steady_requests(path: str, tokens: dict[str, str], rounds: int, batch: int) -> list[bytes]:
    """Round after round, every workload a RUNNING heartbeat with a newer seq (seq 2 onwards:
    seq 1 made them RUNNING), as single requests or `batch` per request."""
    items = [
        {"workload_id": wid, "status": "RUNNING", "seq": r + 2, "token": token}
        for r in range(rounds)
        for wid, token in tokens.items()
    ]
    out = []
    if batch:
        for start in range(0, len(items), batch):
            body = orjson.dumps({"items": items[start : start + batch]})
            out.append(ingest_bench.raw_request(path, "-", body))
        return out
    for item in items:
        token = str(item.pop("token"))
        out.append(ingest_bench.raw_request(path, token, orjson.dumps(item)))
    return out


async def register(api: str, workloads: int) -> dict[str, str]:
    """W trainings through the API, then one RUNNING heartbeat each (seq 1) through the batch route."""
    async with aiohttp.ClientSession() as http:
        ids = [f"train-{i:05d}" for i in range(workloads)]
        tokens = await scale_out.register(http, api, ids, "training")
        items = [
            {"token": t, "workload_id": w, "status": "RUNNING", "seq": 1} for w, t in tokens.items()
        ]
        for start in range(0, len(items), scale_out.BATCH):
            batch = {"items": items[start : start + scale_out.BATCH]}
            async with http.post(f"{api}/v1/heartbeats:batch", json=batch) as r:
                body = await r.json()
                assert r.status == 200 and body["rejected"] == 0, body
    return tokens


async def applied(redis_url: str, keys: Keys, within: float) -> None:
    """Wait until every entry of every shard was delivered and acked."""
    redis = create_redis(redis_url, 2)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            stats = await stream_stats(redis, keys, scale_out.SHARDS)
            if stats.lag == 0 and stats.pending == 0:
                return
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    raise SystemExit(f"the stream was not applied within {within}s")


async def all_running(database_url: str, workloads: int, within: float = 120.0) -> None:
    import asyncpg

    deadline = time.monotonic() + within
    conn = await asyncpg.connect(database_url)
    try:
        while time.monotonic() < deadline:
            n = await conn.fetchval("SELECT count(*) FROM workloads WHERE state = 'RUNNING'")
            if n == workloads:
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise SystemExit(f"not every workload reached RUNNING within {within}s")


def load(
    port: int, requests: list[bytes], args: argparse.Namespace, per_request: int
) -> tuple[int, float]:
    """(heartbeats accepted, seconds) of one load run from CPU 1 (wrk, or the Python client)."""
    if ingest_bench.pinned(1):
        os.sched_setaffinity(0, {1})
    try:
        if args.loader == "wrk":
            result = ingest_bench.wrk(port, requests, args.duration, CONCURRENCY)
        else:
            result = asyncio.run(ingest_bench.send(port, requests, args.duration, CONCURRENCY))
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    statuses = result["statuses"]
    assert isinstance(statuses, dict)
    # wrk's summary says {"2xx": n, "error": n}; the Python client counts each status code.
    ok = sum(n for code, n in statuses.items() if str(code).startswith("2"))
    if sum(statuses.values()) - ok:
        raise SystemExit(f"{sum(statuses.values()) - ok} requests failed: {result}")
    return ok * per_request, float(result["seconds"])  # type: ignore[arg-type]


def statusd_run(path: str, batch: int, args: argparse.Namespace, tmp: Path) -> Run:
    redis = EmbeddedRedis(tmp / f"redis-statusd-{batch}", appendonly=False)
    url = redis.start()
    try:
        prefix = f"steady{secrets.token_hex(2)}:"
        port = ingest_bench.free_port()
        with scale_out.fresh_database(args.pg) as database_url:
            env = scale_out.env_for(url, prefix, database_url, port, tmp / f"state-{batch}")
            subprocess.run(
                [*scale_out.statusd(), "migrate"], env=env, check=True, capture_output=True
            )
            api = f"http://127.0.0.1:{port}"
            serve = [([*ingest_bench.pinned(0), *scale_out.statusd(), "serve"], env)]
            pids: list[int] = []
            with scale_out.processes(serve, tmp, started=pids):
                asyncio.run(scale_out.wait_http(f"{api}/readyz"))
                tokens = asyncio.run(register(api, args.workloads))
                asyncio.run(all_running(database_url, args.workloads))
                asyncio.run(applied(url, Keys(prefix), 120))
                requests = steady_requests(path, tokens, args.rounds, batch)
                pg = scale_out.postgres_pids()
                own = [redis.process.pid]
                before = (scale_out.cpu_seconds(pids), scale_out.cpu_seconds(own))
                pg_before = scale_out.cpu_seconds(pg)
                started = time.monotonic()
                heartbeats, seconds = load(port, requests, args, batch or 1)
                asyncio.run(applied(url, Keys(prefix), 600))
                applied_s = time.monotonic() - started
                server = scale_out.cpu_seconds(pids) - before[0]
                own_redis = scale_out.cpu_seconds(own) - before[1]
                postgres = scale_out.cpu_seconds(pg) - pg_before
    finally:
        redis.stop()
    return per_1000(heartbeats, seconds, applied_s, server, own_redis, postgres)


def naive_run(
    path: str, batch: int, args: argparse.Namespace, tmp: Path, tokens: dict[str, str]
) -> Run:
    redis = EmbeddedRedis(tmp / f"redis-naive-{batch}", appendonly=False)
    url = redis.start()
    try:
        port = ingest_bench.free_port()
        command = [
            *ingest_bench.pinned(0),
            sys.executable,
            str(ROOT / "bench" / "ingest.py"),
            "--serve",
            "pipeline",
            "--port",
            str(port),
            "--redis",
            url,
            "--prefix",
            "naive:",
        ]
        pids: list[int] = []
        with scale_out.processes([(command, dict(os.environ))], tmp, started=pids):
            ingest_bench.wait_port(port, None)
            requests = steady_requests(path, tokens, args.rounds, batch)
            own = [redis.process.pid]
            before = (scale_out.cpu_seconds(pids), scale_out.cpu_seconds(own))
            heartbeats, seconds = load(port, requests, args, batch or 1)
            server = scale_out.cpu_seconds(pids) - before[0]
            own_redis = scale_out.cpu_seconds(own) - before[1]
    finally:
        redis.stop()
    return per_1000(heartbeats, seconds, seconds, server, own_redis, 0.0)


def per_1000(
    heartbeats: int, load_s: float, applied_s: float, server: float, redis: float, pg: float
) -> Run:
    k = 1000 / max(heartbeats, 1)
    return Run(
        heartbeats=heartbeats,
        load_s=load_s,
        applied_s=applied_s,
        cpu_per_1000=(server + redis) * k,
        server_per_1000=server * k,
        redis_per_1000=redis * k,
        postgres_per_1000=pg * k,
    )


PACED_SINGLE_UP_TO = 1000  # heartbeats/s sent as single requests; batches of 100 above that
PACED_CONNECTIONS = 32


def paced_heartbeats(
    tokens: dict[str, str], rate: int, seconds: float, first_seq: int
) -> list[bytes]:
    """`rate` x `seconds` heartbeats, round robin over the workloads, each round a newer seq, as
    single requests or batches of BATCH_ITEMS (see PACED_SINGLE_UP_TO)."""
    total = int(rate * seconds)
    ids = list(tokens)
    items = [
        {
            "workload_id": ids[n % len(ids)],
            "status": "RUNNING",
            "seq": first_seq + n // len(ids),
            "token": tokens[ids[n % len(ids)]],
        }
        for n in range(total)
    ]
    if rate <= PACED_SINGLE_UP_TO:
        out = []
        for item in items:
            token = str(item.pop("token"))
            out.append(ingest_bench.raw_request("/v1/heartbeats", token, orjson.dumps(item)))
        return out
    return [
        ingest_bench.raw_request(
            "/v1/heartbeats:batch", "-", orjson.dumps({"items": items[i : i + BATCH_ITEMS]})
        )
        for i in range(0, len(items), BATCH_ITEMS)
    ]


async def send_paced(port: int, requests: list[bytes], per_second: float) -> dict[str, int]:
    """Request n at start + n / per_second, over PACED_CONNECTIONS keep-alive connections;
    {status: count}."""
    statuses: dict[int, int] = {}
    start = time.perf_counter() + 0.05
    next_index = 0

    async def connection() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < len(requests):
                n, next_index = next_index, next_index + 1
                delay = start + n / per_second - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(requests[n])
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                statuses[int(head[9:12])] = statuses.get(int(head[9:12]), 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(PACED_CONNECTIONS)))
    return statuses


def paced_load(port: int, requests: list[bytes], per_second: float) -> int:
    """Send `requests` paced from CPU 1; the number of 2xx answers (any other fails the run)."""
    if ingest_bench.pinned(1):
        os.sched_setaffinity(0, {1})
    try:
        statuses = asyncio.run(send_paced(port, requests, per_second))
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    if sum(statuses.values()) != ok or ok != len(requests):
        raise SystemExit(f"paced load: {statuses} for {len(requests)} requests")
    return ok


def paced_windows(
    port: int,
    tokens: dict[str, str],
    args: argparse.Namespace,
    pids: list[int],
    redis_pids: list[int],
    settle: Any,
) -> dict[int, Run]:
    """Each rate in turn: paced heartbeats for --paced-s seconds; CPU of `pids` and `redis_pids`
    from the first request until `settle()` returns (statusd: the stream applied)."""
    out: dict[int, Run] = {}
    seq = 1_000  # above the registration's and any earlier round's
    for rate in args.rates:
        requests = paced_heartbeats(tokens, rate, args.paced_s, seq)
        seq += int(rate * args.paced_s) // len(tokens) + 2
        per_request = 1 if rate <= PACED_SINGLE_UP_TO else BATCH_ITEMS
        before = (scale_out.cpu_seconds(pids), scale_out.cpu_seconds(redis_pids))
        started = time.monotonic()
        answered = paced_load(port, requests, rate / per_request)
        load_s = time.monotonic() - started
        settle()
        applied_s = time.monotonic() - started
        server = scale_out.cpu_seconds(pids) - before[0]
        redis = scale_out.cpu_seconds(redis_pids) - before[1]
        out[rate] = per_1000(answered * per_request, load_s, applied_s, server, redis, 0.0)
        print(f"  {rate:,}/s: {out[rate].cpu_per_1000:.4f} s per 1,000", flush=True)
    return out


def statusd_command(source: Path | None) -> tuple[list[str], dict[str, str]]:
    """The `statusd` command line: this build, or the `statusd` package under `source` (another
    commit's, e.g. `git archive <commit> statusd | tar -x -C DIR`) with this venv's libraries."""
    if source is None:
        return scale_out.statusd(), {}
    # First on sys.path, ahead of `-c`'s current directory (this checkout, when run from it).
    runner = (
        f"import sys; sys.path.insert(0, {str(source.resolve())!r}); "
        "from statusd.cli import main; sys.exit(main())"
    )
    return [sys.executable, "-c", runner], {}


def statusd_paced(
    args: argparse.Namespace, tmp: Path, source: Path | None = None
) -> dict[int, Run]:
    redis = EmbeddedRedis(tmp / f"redis-statusd-paced-{secrets.token_hex(2)}", appendonly=False)
    url = redis.start()
    try:
        prefix = f"paced{secrets.token_hex(2)}:"
        port = ingest_bench.free_port()
        with scale_out.fresh_database(args.pg) as database_url:
            command, extra = statusd_command(source)
            env = {
                **scale_out.env_for(url, prefix, database_url, port, tmp / "state-paced"),
                **extra,
            }
            subprocess.run([*command, "migrate"], env=env, check=True, capture_output=True)
            api = f"http://127.0.0.1:{port}"
            serve = [([*ingest_bench.pinned(0), *command, "serve"], env)]
            pids: list[int] = []
            with scale_out.processes(serve, tmp, started=pids):
                asyncio.run(scale_out.wait_http(f"{api}/readyz"))
                tokens = asyncio.run(register(api, args.workloads))
                asyncio.run(all_running(database_url, args.workloads))
                asyncio.run(applied(url, Keys(prefix), 120))
                time.sleep(2)  # registration's after-effects (cache writes, first sweeps) settle

                def settle() -> None:
                    asyncio.run(applied(url, Keys(prefix), 600))

                return paced_windows(port, tokens, args, pids, [redis.process.pid], settle)
    finally:
        redis.stop()


def naive_paced(args: argparse.Namespace, tmp: Path) -> dict[int, Run]:
    redis = EmbeddedRedis(tmp / f"redis-naive-paced-{secrets.token_hex(2)}", appendonly=False)
    url = redis.start()
    try:
        port = ingest_bench.free_port()
        command = [
            *ingest_bench.pinned(0),
            sys.executable,
            str(ROOT / "bench" / "ingest.py"),
            "--serve",
            "pipeline",
            "--port",
            str(port),
            "--redis",
            url,
            "--prefix",
            "naive:",
        ]
        pids: list[int] = []
        with scale_out.processes([(command, dict(os.environ))], tmp, started=pids):
            ingest_bench.wait_port(port, None)
            fake = {f"train-{i:05d}": "-" for i in range(args.workloads)}
            return paced_windows(port, fake, args, pids, [redis.process.pid], lambda: None)
    finally:
        redis.stop()


def paced_main(args: argparse.Namespace) -> int:
    rows = [
        "| rate (heartbeats/s) | requests | build | statusd s / 1,000 hb (serve / redis) | "
        "naive s / 1,000 hb (server / redis) | ratio (goal <= 2) |",
        "|---|---|---|---|---|---|",
    ]
    results: list[dict[str, object]] = []
    tmp = Path(tempfile.mkdtemp(prefix="statusd-steady-cpu-"))
    try:
        for attempt in range(args.repeat):
            print(f"paced, run {attempt + 1}: statusd ...", flush=True)
            ours = statusd_paced(args, tmp)
            baseline: dict[int, Run] = {}
            if args.baseline_src is not None:
                print(f"paced, run {attempt + 1}: baseline statusd ...", flush=True)
                baseline = statusd_paced(args, tmp, args.baseline_src)
            print(f"paced, run {attempt + 1}: naive ...", flush=True)
            naive = naive_paced(args, tmp)
            for rate in args.rates:
                n = naive[rate]
                kind = "single" if rate <= PACED_SINGLE_UP_TO else f"batches of {BATCH_ITEMS}"
                for label, runs in (("statusd", ours), ("baseline", baseline)):
                    if rate not in runs:
                        continue
                    o = runs[rate]
                    ratio = o.cpu_per_1000 / max(n.cpu_per_1000, 1e-9)
                    rows.append(
                        f"| {rate:,} | {kind} | {label} | {o.cpu_per_1000:.4f} "
                        f"({o.server_per_1000:.4f} / {o.redis_per_1000:.4f}) | "
                        f"{n.cpu_per_1000:.4f} ({n.server_per_1000:.4f} / "
                        f"{n.redis_per_1000:.4f}) | {ratio:.2f} |"
                    )
                    results.append(
                        {
                            "run": attempt + 1,
                            "rate": rate,
                            "build": label,
                            "statusd": asdict(o),
                            "naive": asdict(n),
                            "ratio": ratio,
                        }
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(rows))
    out = args.out / f"{datetime.now(UTC):%Y-%m-%dT%H%M%SZ}-steady-cpu-paced.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "workloads": args.workloads,
                "paced_s": args.paced_s,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"written: {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=40, help="distinct seqs per workload")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per run")
    parser.add_argument("--quick", action="store_true", help="200 workloads, 1 s of load")
    parser.add_argument(
        "--loader",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk when installed (the Python one can be the bottleneck)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--pg",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--rates", type=int, nargs="*", default=[], help="paced heartbeats/s, e.g. 100 1000 20000"
    )
    parser.add_argument("--paced-s", type=float, default=10.0, help="seconds per paced rate")
    parser.add_argument("--repeat", type=int, default=1, help="paced runs, one after the other")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="paced mode: also run the `statusd` package in this directory (another commit's)",
    )
    args = parser.parse_args()
    if args.rates:
        return paced_main(args)
    if args.quick:
        args.workloads, args.rounds, args.duration = 200, 10, 1.0
    results: dict[str, dict[str, object]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="statusd-steady-cpu-"))
    try:
        for label, path, batch in (
            ("single", "/v1/heartbeats", 0),
            ("batch", "/v1/heartbeats:batch", BATCH_ITEMS),
        ):
            print(f"{label}: statusd ...", flush=True)
            ours = statusd_run(path, batch, args, tmp)
            print(f"{label}: naive ...", flush=True)
            # The naive server checks nothing: any token will do, the same ids and seqs are sent.
            fake = {f"train-{i:05d}": "-" for i in range(args.workloads)}
            naive = naive_run(path, batch, args, tmp, fake)
            results[label] = {
                "statusd": asdict(ours),
                "naive": asdict(naive),
                "ratio": ours.cpu_per_1000 / max(naive.cpu_per_1000, 1e-9),
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(results))
    out = args.out / f"{datetime.now(UTC):%Y-%m-%dT%H%M%SZ}-steady-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "workloads": args.workloads,
                "duration_s": args.duration,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"written: {out}")
    return 0


def table(results: dict[str, dict[str, object]]) -> str:
    rows = [
        "| requests | statusd s / 1,000 hb (serve / redis; PostgreSQL) | naive s / 1,000 hb "
        "(server / redis) | ratio (goal <= 2) |",
        "|---|---|---|---|",
    ]
    for label, r in results.items():
        ours, naive = r["statusd"], r["naive"]
        assert isinstance(ours, dict) and isinstance(naive, dict)
        rows.append(
            f"| {label} | {ours['cpu_per_1000']:.4f} ({ours['server_per_1000']:.4f} / "
            f"{ours['redis_per_1000']:.4f}; {ours['postgres_per_1000']:.4f}) | "
            f"{naive['cpu_per_1000']:.4f} ({naive['server_per_1000']:.4f} / "
            f"{naive['redis_per_1000']:.4f}) | {r['ratio']:.2f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
