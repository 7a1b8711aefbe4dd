"""Consume CPU per 1,000 STEADY heartbeats (no state change): the consumer's share of the
CPU-per-heartbeat figure, measured at full rate (no idle costs spread over few heartbeats).

    .venv/bin/python bench/steady_apply.py [--workloads 4000] [--rounds 10] [--profile FILE]

Warm-up: W notebooks registered through the API, one READY heartbeat each, applied by a
`consume`. Then R rounds of READY (seq 2..R+1) pushed through the batch endpoint with no consumer
running, then one `consume` drains them (with --profile, under `py-spy record -f raw`). PostgreSQL
(a fresh database) and a private redis-server 7+ (the drain clock reads the group's lag, which
Redis reports from 7.0), with bench/scale_out.py's helpers. --profile needs py-spy in the venv.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import scale_out  # noqa: E402  (statusd processes, fresh databases, the drain clock)

from statusd.keys import Keys  # noqa: E402
from statusd.redis_runtime import EmbeddedRedis  # noqa: E402


async def register(api: str, workloads: int) -> dict[str, str]:
    async with aiohttp.ClientSession() as http:
        return await scale_out.register(
            http, api, [f"nb-{i:05d}" for i in range(workloads)], "notebook"
        )


async def push(api: str, tokens: dict[str, str], seqs: Iterable[int]) -> None:
    items = [
        {"token": token, "workload_id": wid, "status": "READY", "seq": seq}
        for seq in seqs
        for wid, token in tokens.items()
    ]
    async with aiohttp.ClientSession() as http:
        for start in range(0, len(items), scale_out.BATCH):
            batch = {"items": items[start : start + scale_out.BATCH]}
            async with http.post(f"{api}/v1/heartbeats:batch", json=batch) as r:
                body = await r.json()
                assert r.status == 200 and body["rejected"] == 0, body


def run(workloads: int, rounds: int, profile: str | None, admin_url: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="statusd-steady-"))
    redis = EmbeddedRedis(tmp / "redis", appendonly=False)
    url = redis.start()
    try:
        prefix = f"steady{secrets.token_hex(2)}:"
        port = scale_out.ingest_bench.free_port()
        with scale_out.fresh_database(admin_url) as database_url:
            env = scale_out.env_for(url, prefix, database_url, port, tmp / "state")
            migrate = [*scale_out.statusd(), "migrate"]
            subprocess.run(migrate, env=env, check=True, capture_output=True)
            api = f"http://127.0.0.1:{port}"
            consume = [([*scale_out.statusd(), "consume"], env)]
            serve = [([*scale_out.statusd(), "serve", "--consumers", "0"], env)]
            with scale_out.processes(serve, tmp):
                asyncio.run(scale_out.wait_http(f"{api}/readyz"))
                tokens = asyncio.run(register(api, workloads))
                asyncio.run(push(api, tokens, [1]))  # PENDING -> READY: the only transitions
                pids: list[int] = []
                with scale_out.processes(consume, tmp, started=pids):
                    asyncio.run(scale_out.drain(url, Keys(prefix), workloads, 300, pids))
                asyncio.run(push(api, tokens, range(2, rounds + 2)))
            total = workloads * rounds
            pids = []
            with scale_out.processes(consume, tmp, started=pids):
                spy = None
                if profile:
                    spy = subprocess.Popen(
                        [str(Path(sys.executable).with_name("py-spy")), "record", "-r", "300"]
                        + ["-f", "raw", "-o", profile]
                        + ["-p", str(pids[0])],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                steady = asyncio.run(scale_out.drain(url, Keys(prefix), total, 600, pids))
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"steady heartbeats: {total:,} applied by one consume at {steady.rate:,.0f}/s; "
        f"consume CPU {steady.cpu_per_1000:.4f} s per 1,000, PostgreSQL "
        f"{steady.postgres_per_1000:.4f} s per 1,000"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--profile", help="py-spy raw profile of the consume process to FILE")
    parser.add_argument(
        "--pg",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    run(args.workloads, args.rounds, args.profile, args.pg)


if __name__ == "__main__":
    main()
