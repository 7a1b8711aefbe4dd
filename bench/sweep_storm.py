"""Sweep storm benchmark: N silent trainings at once, 10% of their endpoints hanging.

    .venv/bin/python bench/sweep_storm.py [--workloads 5000] [--workers 2]

Both sides poll the same endpoints on one loopback peer (a subprocess: 90% answer SUCCEEDED after
50 ms, 10% never answer), with the same timeout (STATUSD_POLL_TIMEOUT, 2 s) and 100 in flight:
  plain    an aiohttp poller over the URL list: GET, parse, nothing else (the ceiling)
  statusd  one sweep (statusd.sweeper.sweep.run_sweep) over PostgreSQL + Redis, its chunks run by
           `--workers` worker processes (each one event loop running statusd.sweeper.poller
           .run_poll on one chunk at a time, as a `statusd worker` prefork child does), timed from
           the sweep's start until every chunk's verdicts are applied.
Needs PostgreSQL (BENCH_PG_URL) and redis-server; creates and drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import sync_drain  # noqa: E402

POLL_TIMEOUT = 2.0
IN_FLIGHT = 100
ANSWER_MS = 50.0
SECRET = "bench-secret-" + "s" * 32
TOKEN = "bench-token-" + "t" * 32


def hangs(index: int) -> bool:
    return index % 10 == 0


def workload_id(index: int) -> str:
    return f"storm-{index:06d}{'-hang' if hangs(index) else ''}"


# -- the container endpoints (a subprocess: `sweep_storm.py --serve PORT`) -----------------------
def serve(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def status(request: web.Request) -> web.Response:
        if request.match_info["id"].endswith("-hang"):
            await asyncio.sleep(3600)  # until the poller gives up and the handler is cancelled
        await asyncio.sleep(ANSWER_MS / 1000)
        return web.json_response({"status": "SUCCEEDED", "seq": 2})

    app = web.Application()
    app.router.add_get("/w/{id}", status)
    uvloop.install()
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, access_log=None, handler_cancellation=True
    )


@contextlib.contextmanager
def endpoints() -> Iterator[str]:
    port = sync_drain.free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], cwd=ROOT)
    try:
        sync_drain.wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


# -- plain poller ---------------------------------------------------------------------------------
async def plain_poller(urls: list[str]) -> float:
    import aiohttp
    import orjson

    queue = iter(urls)
    timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as session:

        async def poller() -> None:
            for url in queue:
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    async with session.get(url, timeout=timeout) as resp:
                        orjson.loads(await resp.read())

        started = time.perf_counter()
        await asyncio.gather(*(poller() for _ in range(IN_FLIGHT)))
        return time.perf_counter() - started


# -- statusd --------------------------------------------------------------------------------------
def settings_for(db_url: str, redis_url: str, prefix: str) -> Any:
    from statusd.settings import Settings

    return Settings(
        database_url=db_url,
        redis_url=redis_url,
        redis_prefix=prefix,
        secret=SECRET,
        api_token=TOKEN,
        poll_timeout=POLL_TIMEOUT,
        poll_concurrency=IN_FLIGHT,
        poll_allow_nets=["127.0.0.0/8"],
        log_level="WARNING",  # not one INFO line per transition on the bench's terminal
        state_dir=Path(tempfile.gettempdir()) / "statusd-bench-state",
    )


def worker(db_url: str, redis_url: str, prefix: str) -> None:
    """One worker process: runs `run_poll` on each chunk pushed to the bench queue, in turn."""
    from statusd.sweeper.poller import run_poll
    from statusd.wiring import open_runtime

    async def main() -> None:
        rt = await open_runtime(settings_for(db_url, redis_url, prefix))
        try:
            await rt.redis.rpush(f"{prefix}bench:ready", os.getpid())
            while True:
                # Short blocking pops: the pool's socket timeout is shorter than an idle spell.
                popped = await rt.redis.blpop([f"{prefix}bench:chunks"], timeout=1)
                if popped is None:
                    continue
                job = json.loads(popped[1])
                if job is None:
                    return
                report = await run_poll(rt, job["ids"], job["token"], job["run"])
                await rt.redis.rpush(f"{prefix}bench:done", json.dumps(report.__dict__))
        finally:
            await rt.close()

    asyncio.run(main())


async def seed(settings: Any, base: str, n: int) -> None:
    """n trainings RUNNING since an hour ago, silent for 100 s (bulk insert: a fixture, not a
    path under test)."""
    from sqlalchemy import insert

    from statusd.db import create_engine, transaction
    from statusd.keys import Keys
    from statusd.lifecycle import Kind, State
    from statusd.models import WorkloadRow
    from statusd.redis_runtime import create_redis

    table = WorkloadRow.__table__  # type: ignore[attr-defined]
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    rows = [
        {
            "id": workload_id(i),
            "kind": Kind.TRAINING,
            "state": State.RUNNING,
            "generation": 1,
            "version": 1,
            "labels": {},
            "status_url": f"{base}/w/{workload_id(i)}",
            "last_seq": 1,
            "state_changed_at": long_ago,
            "created_at": long_ago,
            "poll_failures": 0,
        }
        for i in range(n)
    ]
    engine = create_engine(settings.database_url)
    try:
        async with transaction(engine) as conn:
            await conn.execute(insert(table), rows)
    finally:
        await engine.dispose()
    redis = create_redis(settings.redis_url, 8)
    keys = Keys(settings.redis_prefix, settings.stream_shards)
    try:
        silent_since = time.time() - 100
        for shard, ids in keys.by_shard(workload_id(i) for i in range(n)).items():
            await redis.zadd(keys.last_seen(shard), dict.fromkeys(ids, silent_since))
    finally:
        await redis.aclose()


async def statusd_sweep(settings: Any, n: int, workers: int) -> dict[str, Any]:
    from statusd.sweeper.sweep import run_sweep
    from statusd.wiring import open_runtime

    prefix = settings.redis_prefix
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 (starting a child is instant; the wait is below)
            [
                sys.executable,
                __file__,
                "--worker",
                settings.database_url,
                str(settings.redis_url),
                prefix,
            ],
            cwd=ROOT,
        )
        for _ in range(workers)
    ]
    rt = await open_runtime(settings)
    try:
        ready, deadline = 0, time.monotonic() + 60
        while ready < workers:  # every worker up before the clock starts
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("a bench worker did not start")
            ready += await rt.redis.blpop([f"{prefix}bench:ready"], timeout=1) is not None
        started = time.perf_counter()
        result = await run_sweep(rt, f"sweep-bench-{time.monotonic_ns()}")
        for chunk in result.chunks:
            # "run" stands for the Celery task id the `poll` task passes (statusd.celery.sweeper_tasks).
            job = {"ids": chunk, "token": result.token, "run": uuid.uuid4().hex}
            await rt.redis.rpush(f"{prefix}bench:chunks", json.dumps(job))
        reports = []
        deadline = time.monotonic() + 600
        while len(reports) < len(result.chunks):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("a bench worker died, or the polls took over 600 s")
            done = await rt.redis.blpop([f"{prefix}bench:done"], timeout=1)
            if done is not None:
                reports.append(json.loads(done[1]))
        elapsed = time.perf_counter() - started
        for _ in range(workers):
            await rt.redis.rpush(f"{prefix}bench:chunks", json.dumps(None))
    finally:
        await rt.close()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()  # a worker that died or hangs: the run has already failed
                proc.wait(5)
    polled = sum(r["polled"] for r in reports)
    applied = sum(r["applied"] for r in reports)
    if result.enqueued != n or polled != n:
        raise RuntimeError(f"sweep enqueued {result.enqueued} and polled {polled} of {n}")
    if applied < n - n // 10:  # every answering endpoint's SUCCEEDED is applied
        raise RuntimeError(f"only {applied} transitions applied of {n - n // 10}")
    return {"seconds": elapsed, "chunks": len(result.chunks), "applied": applied}


async def run(n: int, workers: int) -> dict[str, Any]:
    from statusd.redis_runtime import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="statusd-bench-") as tmp, endpoints() as base:
        urls = [f"{base}/w/{workload_id(i)}" for i in range(n)]
        plain_s = await plain_poller(urls)
        redis = EmbeddedRedis(Path(tmp) / "redis", appendonly=False)
        redis_url = redis.start()
        try:
            async with sync_drain.bench_database() as db_url:
                settings = settings_for(db_url, redis_url, "bench:")
                await seed(settings, base, n)
                result = await statusd_sweep(settings, n, workers)
        finally:
            redis.stop()
    return {
        "workloads": n,
        "hanging": sum(hangs(i) for i in range(n)),
        "workers": workers,
        "chunks": result["chunks"],
        "applied": result["applied"],
        "plain_poller_s": round(plain_s, 2),
        "statusd_sweep_s": round(result["seconds"], 2),
        # Lower is better here: the ratio is statusd's time over the plain poller's.
        "ratio": round(result["seconds"] / plain_s, 3),
        "goal_ratio": 1.5,
        "goal_is_max": True,
        "statusd": f"{result['seconds']:.1f} s",
        "baseline": f"{plain_s:.1f} s",
        "notes": f"{n:,} stale, 10% hanging, {workers} worker processes, time ratio (lower=better)",
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.workloads, args.workers)), indent=2))


if __name__ == "__main__":
    main()
