"""Ingest benchmark: statusd's hot path against two bare aiohttp handlers, measured in one run.

    .venv/bin/python bench/ingest.py [--duration 5] [--concurrency 64] [--workers 2]

Scenarios (each a fresh server subprocess pinned to CPU 0; the load generator on CPU 1):
  bare       aiohttp JSON -> 202, uvloop + orjson                     (HTTP ceiling)
  pipeline   bare + one awaited redis-py pipeline (XADD + ZADD) per request (the naive design;
             its batch route pipelines an XADD + ZADD per item)
  statusd    create_app(consumers=0): POST /v1/heartbeats (HMAC, validation, group commit)
  batch      statusd POST /v1/heartbeats:batch, 100 items per request (heartbeats/s)
  workers    `statusd serve --workers N` (SO_REUSEPORT), if --workers > 1 (shares the CPUs with the load)

The load generator is wrk when installed (`make bench` installs it on Debian), else a small
keep-alive HTTP/1.1 client on raw asyncio streams (which can itself be the bottleneck): `--concurrency` connections, each sending its next request as soon as the
previous answer is read, for a fixed duration. Uses a dedicated redis-server it starts itself.
No assertions: it prints req/s, heartbeats/s, p50/p99 and the ratios against both bare handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-" + "s" * 32
WORKLOADS = 1000
BATCH_ITEMS = 100


# -- servers (run in a subprocess: `ingest.py --serve <kind>`) ------------------------------------
def serve(kind: str, port: int, redis_url: str, prefix: str, state_dir: str, workers: int) -> None:
    import uvloop
    from aiohttp import web

    if kind == "bare":

        async def bare(request: web.Request) -> web.Response:
            doc = orjson.loads(await request.read())
            return web.Response(
                body=orjson.dumps({"status": "accepted", "seq": doc["seq"]}),
                status=202,
                content_type="application/json",
            )

        app = web.Application()
        app.router.add_post("/v1/heartbeats", bare)
    elif kind == "pipeline":
        from redis.asyncio import Redis

        async def ctx(app: web.Application) -> object:
            app["redis"] = Redis.from_url(redis_url, max_connections=256)
            yield
            await app["redis"].aclose()

        async def piped(request: web.Request) -> web.Response:
            doc = orjson.loads(await request.read())
            async with request.app["redis"].pipeline(transaction=False) as pipe:
                pipe.xadd(
                    f"{prefix}hb",
                    {"workload_id": doc["workload_id"], "status": doc["status"], "seq": doc["seq"]},
                )
                pipe.zadd(f"{prefix}seen", {doc["workload_id"]: time.time()})
                await pipe.execute()
            return web.Response(
                body=b'{"status":"accepted"}', status=202, content_type="application/json"
            )

        async def piped_batch(request: web.Request) -> web.Response:
            doc = orjson.loads(await request.read())
            now = time.time()
            async with request.app["redis"].pipeline(transaction=False) as pipe:
                for item in doc["items"]:
                    pipe.xadd(
                        f"{prefix}hb",
                        {
                            "workload_id": item["workload_id"],
                            "status": item["status"],
                            "seq": item["seq"],
                        },
                    )
                    pipe.zadd(f"{prefix}seen", {item["workload_id"]: now})
                await pipe.execute()
            return web.Response(
                body=b'{"status":"accepted"}', status=200, content_type="application/json"
            )

        app = web.Application()
        app.cleanup_ctx.append(ctx)  # type: ignore[arg-type]
        app.router.add_post("/v1/heartbeats", piped)
        app.router.add_post("/v1/heartbeats:batch", piped_batch)
    else:
        from statusd.app import create_app

        settings = _settings(redis_url, prefix, state_dir, port)
        if kind == "workers":
            from statusd.serving import serve as run

            raise SystemExit(run(settings, workers=workers, consumers=0))
        app = create_app(settings, consumers=0)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)


def _settings(redis_url: str, prefix: str, state_dir: str, port: int):  # type: ignore[no-untyped-def]
    from statusd.settings import Settings

    return Settings(
        secret=SECRET,
        api_token="bench-api-token-" + "t" * 32,
        redis_url=redis_url,
        redis_prefix=prefix,
        database_url=f"sqlite+aiosqlite:///{state_dir}/bench.db",  # never touched by ingest
        state_dir=Path(state_dir),
        port=port,
        log_level="WARNING",
        log_format="json",
        redis_max_connections=256,
    )


# -- load generator (run in a subprocess: `ingest.py --load ...`) ---------------------------------
def build_requests(path: str, batch: int) -> list[bytes]:
    from statusd import tokens
    from statusd.lifecycle import Kind

    out = []
    for i in range(WORKLOADS):
        wid = f"bench-{i:05d}"
        token = tokens.issue(SECRET.encode(), wid, Kind.TRAINING, 1)
        if batch:
            items = []
            for j in range(batch):
                w = f"bench-{(i + j) % WORKLOADS:05d}"
                items.append(
                    {
                        "token": tokens.issue(SECRET.encode(), w, Kind.TRAINING, 1),
                        "workload_id": w,
                        "status": "RUNNING",
                        "seq": i + 1,
                    }
                )
            body = orjson.dumps({"items": items})
        else:
            body = orjson.dumps({"workload_id": wid, "status": "RUNNING", "seq": i + 1})
        out.append(raw_request(path, token, body))
    return out


def raw_request(path: str, token: str, body: bytes) -> bytes:
    """One keep-alive HTTP/1.1 POST of a JSON body with a bearer token."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def load(
    port: int, path: str, duration: float, concurrency: int, batch: int
) -> dict[str, object]:
    return await send(port, build_requests(path, batch), duration, concurrency)


async def send(
    port: int, requests: list[bytes], duration: float, concurrency: int
) -> dict[str, object]:
    """`wrk` in Python: `requests` in order and round again over `concurrency` connections."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = time.perf_counter() + duration

    async def connection(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                writer.write(requests[i % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
                i += concurrency
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection(k) for k in range(concurrency)), return_exceptions=True)
    elapsed = time.perf_counter() - began
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "seconds": elapsed,
        "statuses": statuses,
        "p50_ms": latencies[n // 2] * 1000 if n else 0.0,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else 0.0,
    }


# The requests come from a data file, a line each (target, token, body; tab-separated): written
# into the script as literals, tens of thousands overflow LuaJIT's constant table.
WRK_SCRIPT = """
local reqs = {}
for line in io.lines("%s") do
  local target, token, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
  reqs[#reqs + 1] = wrk.format("POST", target, {["Host"] = "127.0.0.1",
    ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
local n = #reqs
local i = 0
request = function()
  i = i + 1
  return reqs[(i %% n) + 1]
end
done = function(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests": %%d, "seconds": %%f, "p50_ms": %%f, "p99_ms": %%f, "statuses": {"2xx": %%d, "error": %%d}}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests - bad, bad))
end
"""


def load_with_wrk(
    port: int, path: str, duration: float, concurrency: int, batch: int
) -> dict[str, object]:
    """The same requests as `load`, sent by wrk (C, one thread): the client is no longer the limit."""
    return wrk(port, build_requests(path, batch), duration, concurrency)


def wrk(port: int, requests: list[bytes], duration: float, concurrency: int) -> dict[str, object]:
    """Send `requests` (raw HTTP/1.1, as `build_requests` makes them), in order and round again,
    over `concurrency` keep-alive connections for `duration` seconds; wrk's summary as a dict."""
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as data:
        for raw in requests:
            head, body = raw.split(b"\r\n\r\n", 1)
            first, *headers = head.decode().split("\r\n")
            fields = dict(h.split(": ", 1) for h in headers)
            token = fields["Authorization"].split(" ")[-1]
            data.write(f"{first.split(' ')[1]}\t{token}\t{body.decode()}\n")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % data.name)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, int(duration))}s",
                "--latency",
                "-s",
                script.name,
                f"http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 60,
        )
    finally:
        os.unlink(script.name)
        os.unlink(data.name)
    result: dict[str, object] = orjson.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- orchestration --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start within {timeout}s")


def pinned(cpu: int) -> list[str]:
    return (
        ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    )


def run_scenario(
    name: str, args: argparse.Namespace, redis_url: str, state_dir: str
) -> dict[str, object]:
    port = free_port()
    prefix = f"bench{name}:"
    server_cpu = [] if name == "workers" else pinned(0)
    server = subprocess.Popen(
        [
            *server_cpu,
            sys.executable,
            __file__,
            "--serve",
            name,
            "--port",
            str(port),
            "--redis",
            redis_url,
            "--prefix",
            prefix,
            "--state-dir",
            state_dir,
            "--workers",
            str(args.workers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_port(port, server)
        path = "/v1/heartbeats:batch" if name == "batch" else "/v1/heartbeats"
        batch = BATCH_ITEMS if name == "batch" else 0
        out = subprocess.run(
            [
                *pinned(1),
                sys.executable,
                __file__,
                "--load",
                "--port",
                str(port),
                "--path",
                path,
                "--duration",
                str(args.duration),
                "--concurrency",
                str(args.concurrency),
                "--batch",
                str(batch),
                "--loader",
                args.loader,
            ],
            capture_output=True,
            check=True,
            timeout=args.duration + 120,
        )
        result: dict[str, object] = orjson.loads(out.stdout)
        result["heartbeats_per_request"] = batch or 1
        return result
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--workers", type=int, default=2, help="also measure `serve --workers N` (1 = skip)"
    )
    parser.add_argument("--serve")
    parser.add_argument("--load", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", default="")
    parser.add_argument("--prefix", default="bench:")
    parser.add_argument("--state-dir", default="")
    parser.add_argument("--path", default="/v1/heartbeats")
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument(
        "--loader",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk when installed (the Python one can be the bottleneck)",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.redis, args.prefix, args.state_dir, args.workers)
        return
    if args.load:
        if args.loader == "wrk":
            result = load_with_wrk(
                args.port, args.path, args.duration, args.concurrency, args.batch
            )
        else:
            import uvloop

            result = uvloop.run(
                load(args.port, args.path, args.duration, args.concurrency, args.batch)
            )
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode())
        return
    report(args)


def report(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from statusd.redis_runtime import EmbeddedRedis

    console = Console(width=max(120, Console().width))
    names = ["bare", "pipeline", "statusd", "batch"] + (["workers"] if args.workers > 1 else [])
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="statusd-bench-") as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis", appendonly=False)
        redis_url = redis.start()
        try:
            with Progress(console=console) as progress:
                task = progress.add_task("ingest benchmark", total=len(names))
                for name in names:
                    progress.update(
                        task, description=f"{name} ({args.duration:.0f} s, c={args.concurrency})"
                    )
                    results[name] = run_scenario(name, args, redis_url, tmp)
                    progress.advance(task)
        finally:
            redis.stop()

    def rate(name: str) -> float:
        r = results[name]
        return float(r["requests"]) / float(r["seconds"])  # type: ignore[arg-type]

    def hb_rate(name: str) -> float:
        return rate(name) * int(results[name]["heartbeats_per_request"])  # type: ignore[call-overload]

    table = Table(
        title=f"ingest, {args.duration:.0f} s each, {args.concurrency} connections, "
        f"{os.cpu_count()} CPUs, load by {args.loader}"
    )
    for column in (
        "scenario",
        "req/s",
        "heartbeats/s",
        "p50 ms",
        "p99 ms",
        "x bare",
        "x pipeline",
        "non-2xx",
    ):
        table.add_column(column, justify="left" if column == "scenario" else "right", no_wrap=True)
    for name in names:
        r = results[name]
        table.add_row(
            name,
            f"{rate(name):,.0f}",
            f"{hb_rate(name):,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{hb_rate(name) / rate('bare'):.2f}",
            f"{hb_rate(name) / rate('pipeline'):.2f}",
            str(sum(v for k, v in r["statuses"].items() if not str(k).startswith("2"))),  # type: ignore[union-attr]
        )
    console.print(table)
    console.print(
        "x bare / x pipeline: heartbeats/s relative to the bare handler and to one-pipeline-per-request, "
        "measured in this same run."
        + (
            " The load generator is Python: the bare figure is bounded by it (install wrk)."
            if args.loader == "python"
            else ""
        )
    )


if __name__ == "__main__":
    main()
