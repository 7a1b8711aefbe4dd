"""Fleet steady state and detection latency, against the seed design, with real statusd processes.

    .venv/bin/python bench/detection.py [--quick] [--workloads 1000,10000] [--consume N] [--pg URL]

For each fleet size N (trainings on PostgreSQL, one `statusd serve`, one `statusd worker -c 2`,
one `statusd beat`, a redis-server of its own, every status endpoint on one loopback server;
with `--consume N`, `serve --consumers 0` and N `statusd consume` processes apply the stream, as
a busy production deployment runs them):

  steady     every workload heartbeats at the interval statusd tells it (`next_heartbeat_s`, the
             default TTL) from its registration on; once all are RUNNING and the backlog is
             worked off (`warm_up`), for 30 s or `--steady-s`: stream lag p99 (sampled every
             0.25 s), CPU per 1,000 heartbeats
             (serve [+ consume] + redis-server, and with worker + beat, from /proc), Redis bytes
             per tracked workload
             (used_memory growth over the run / N) and SQL rows written per steady heartbeat
             (transitions + outbox rows; 0 is the design).
  detection  then 1% of the trainings (at least 10) finish silently (heartbeats stop, the endpoint
             answers SUCCEEDED) and 1% die (heartbeats stop, the endpoint hangs): seconds from the
             last heartbeat until statusd says SUCCEEDED / UNREACHABLE, p50 and max, against the
             bound the settings give (silence threshold + sweep interval + poll timeout, and for
             UNREACHABLE the further polls STATUSD_UNREACHABLE_AFTER asks for).
  seed       the design statusd replaced: a beat task that every 5 s selects the 15 RUNNING rows
             polled longest ago and polls them. Its polls are real HTTP requests to the same
             loopback endpoints, but its 5 s ticks are not slept (they would take 55 minutes at
             10,000): the time reported is ticks x 5 s, which is exact for that design, since its
             delay is its schedule, not its work.

Prints one table, writes bench/results/<UTC time>-detection.json, exits non-zero if a run
failed (a verdict never came, a process died), never because a figure was slow.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ingest as ingest_bench  # noqa: E402  (free ports)
import scale_out  # noqa: E402  (statusd processes, fresh databases, env)

from statusd.ingest.streams import shard_streams, text  # noqa: E402
from statusd.keys import Keys  # noqa: E402

SEED_TICK_S = 5.0
SEED_ROWS_PER_TICK = 15
BATCH = 500
IN_FLIGHT = 8  # batch requests in flight at once (the fleet is many independent containers)
BUSY_RETRIES = 30  # a batch answered 503 this many times in a row ends the run


@dataclass(frozen=True)
class Timing:
    """The settings a run uses (quick runs shrink the TTL so a verdict comes in seconds)."""

    heartbeat_ttl: float
    sweep_interval: float
    poll_timeout: float
    unreachable_after: int
    steady_s: float

    def env(self) -> dict[str, str]:
        return {
            "STATUSD_HEARTBEAT_TTL": str(self.heartbeat_ttl),
            "STATUSD_SWEEP_INTERVAL": str(self.sweep_interval),
            "STATUSD_POLL_TIMEOUT": str(self.poll_timeout),
            "STATUSD_UNREACHABLE_AFTER": str(self.unreachable_after),
            "STATUSD_STARTUP_GRACE": "0",
        }


WORKER_PROCESSES = 2  # `statusd worker -c 2`
DETECT_SHARE = 50  # the detection phase silences 1 in 50 of the fleet at once


def poll_slots(size: int) -> int:
    """STATUSD_POLL_CONCURRENCY for this fleet, by the sizing rule (README, "Sizing the pull
    path"): a slot for every workload that can go stale in one sweep, so an endpoint hanging for
    the poll timeout delays only its own verdict. Never below the default."""
    return max(100, math.ceil(max(20, size // DETECT_SHARE) / WORKER_PROCESSES))


QUICK = Timing(
    heartbeat_ttl=3.0, sweep_interval=1.0, poll_timeout=1.0, unreachable_after=2, steady_s=6
)
FULL = Timing(
    heartbeat_ttl=30.0, sweep_interval=5.0, poll_timeout=2.0, unreachable_after=2, steady_s=30
)


@dataclass
class Fleet:
    """The simulated trainings: tokens, seqs, and what each one's status endpoint answers."""

    ids: list[str]
    tokens: dict[str, str] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)
    answer: dict[str, str] = field(default_factory=dict)  # RUNNING | SUCCEEDED | HANG
    silent: set[str] = field(default_factory=set)
    interval: float = 1.0
    sent: int = 0
    busy: int = 0  # batch requests answered 503 (and retried)


def status_app(fleet: Fleet) -> web.Application:
    async def status(request: web.Request) -> web.StreamResponse:
        wid = request.match_info["wid"]
        answer = fleet.answer.get(wid, "RUNNING")
        if answer == "HANG":
            await asyncio.sleep(3600)
        fleet.seq[wid] = fleet.seq.get(wid, 0) + 1
        return web.json_response({"status": answer, "seq": fleet.seq[wid]})

    app = web.Application()
    app.router.add_get("/status/{wid}", status)
    return app


REGISTER_ITEMS = 1000  # STATUSD_MAX_BATCH_ITEMS' default
REGISTER_IN_FLIGHT = 2


async def register(http: aiohttp.ClientSession, api: str, fleet: Fleet, status_base: str) -> None:
    """Through `POST /v1/workloads:batch`, as a platform starting a fleet at once (a sweep of
    trials, a node's pods) registers it: one request per workload, under the fleet's own
    heartbeats, takes this size tens of minutes to register (docs/benchmarks.md)."""
    auth = {"Authorization": f"Bearer {scale_out.API_TOKEN}"}
    limit = asyncio.Semaphore(REGISTER_IN_FLIGHT)

    async def chunk(part: list[str]) -> None:
        left = part
        async with limit:
            for _ in range(BUSY_RETRIES):
                items = [
                    {"id": wid, "kind": "training", "status_url": f"{status_base}/status/{wid}"}
                    for wid in left
                ]
                async with http.post(
                    f"{api}/v1/workloads:batch", json={"items": items}, headers=auth
                ) as response:
                    answer = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"register: HTTP {response.status} {answer}")
                refused = []  # items answered 503 were not stored: only those are sent again
                for wid, result in zip(left, answer["results"], strict=True):
                    if result["status"] == 201:
                        fleet.tokens[wid] = result["workload"]["heartbeat_token"]
                    elif result["status"] == 503:
                        refused.append(wid)
                    else:
                        raise RuntimeError(f"register {wid}: {result}")
                if not refused:
                    return
                left = refused
                await asyncio.sleep(1.0)
            raise RuntimeError(f"register: {len(left)} items refused {BUSY_RETRIES} times")

    ids = fleet.ids
    await asyncio.gather(
        *(chunk(ids[i : i + REGISTER_ITEMS]) for i in range(0, len(ids), REGISTER_ITEMS))
    )


async def heartbeat_loop(http: aiohttp.ClientSession, api: str, fleet: Fleet) -> None:
    """Every workload once per `fleet.interval`, spread over 10 slices of the interval, a slice's
    batches sent `IN_FLIGHT` at a time, as independent containers would (one batch at a time
    capped this client below 20,000 heartbeats/s whatever statusd did). A slice not yet answered
    when the next one is due delays it: the rate sent then says statusd fell behind.

    Each workload's item is pre-encoded up to its seq: building 20,000 dicts a second and
    encoding them took a large share of a core on the same two cores statusd runs on."""
    slices = 10
    parts = [fleet.ids[i::slices] for i in range(slices)]
    head: dict[str, bytes] = {}

    def item_head(wid: str) -> bytes:
        if wid not in head:
            head[wid] = (
                f'{{"workload_id":"{wid}","token":"{fleet.tokens[wid]}","status":"RUNNING","seq":'
            ).encode()
        return head[wid]

    limit = asyncio.Semaphore(IN_FLIGHT)

    async def send(body: bytes) -> None:
        async with limit:
            doc = await post_batch(http, api, fleet, body)
        fleet.sent += int(doc["accepted"])
        for result in doc.get("results", [])[:1]:
            fleet.interval = float(result.get("next_heartbeat_s", fleet.interval))

    n = 0
    while True:
        started = time.monotonic()
        # Registered ones only: a container heartbeats from the moment it is registered.
        part = [w for w in parts[n % slices] if w in fleet.tokens and w not in fleet.silent]
        bodies = []
        for start in range(0, len(part), BATCH):
            items = []
            for wid in part[start : start + BATCH]:
                seq = fleet.seq[wid] = fleet.seq.get(wid, 0) + 1
                items.append(item_head(wid) + str(seq).encode() + b"}")
            bodies.append(b'{"items":[' + b",".join(items) + b"]}")
        await asyncio.gather(*(send(body) for body in bodies))
        n += 1
        await asyncio.sleep(max(0.0, fleet.interval / slices - (time.monotonic() - started)))


async def post_batch(
    http: aiohttp.ClientSession, api: str, fleet: Fleet, body: bytes
) -> dict[str, Any]:
    """POST one batch as a well-behaved agent does: a 503 (statusd shedding load) is retried after
    its Retry-After, and counted; any other failure ends the run."""
    headers = {"Content-Type": "application/json"}
    for _ in range(BUSY_RETRIES):
        async with http.post(f"{api}/v1/heartbeats:batch", data=body, headers=headers) as response:
            doc: dict[str, Any] = await response.json()
            if response.status == 200:
                return doc
            if response.status != 503:
                raise RuntimeError(f"heartbeats: HTTP {response.status} {doc}")
            fleet.busy += 1
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    raise RuntimeError(f"heartbeats: still 503 after {BUSY_RETRIES} tries: {doc}")


def beating(beats: asyncio.Task[None]) -> None:
    """The heartbeat loop must outlive every phase: if it died, say why now."""
    if beats.done():
        beats.result()  # raises what ended it
        raise RuntimeError("the heartbeat loop ended")


async def db_rows(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT (SELECT count(*) FROM transitions) + (SELECT count(*) FROM outbox)"
        )
    )


async def wait_verdicts(
    conn: asyncpg.Connection, want: dict[str, str], since: dict[str, float], within: float
) -> dict[str, float]:
    """workload id -> seconds from its last heartbeat to statusd's verdict `want[id]`."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + within
    while len(seen) < len(want) and time.monotonic() < deadline:
        rows = await conn.fetch(
            "SELECT id, state FROM workloads WHERE id = ANY($1::text[])", list(want)
        )
        now = time.monotonic()
        for row in rows:
            if row["id"] not in seen and row["state"] == want[row["id"]]:
                seen[row["id"]] = now - since[row["id"]]
        await asyncio.sleep(0.1)
    if len(seen) < len(want):
        missing = sorted(set(want) - set(seen))[:5]
        raise RuntimeError(
            f"{len(want) - len(seen)} verdicts never came within {within:.0f} s, e.g. {missing}"
        )
    return seen


async def lag_seconds(redis: Any, keys: Keys) -> float:
    """Age of the oldest heartbeat not yet applied (pending or undelivered), over every shard: the
    lag that matters to a reader, in seconds (entry ids carry their append time in ms)."""
    streams = shard_streams(keys, scale_out.SHARDS)
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xinfo_groups(stream)
            pipe.xpending(stream, keys.consumer_group)
        replies = await pipe.execute(raise_on_error=False)
    oldest: list[int] = []
    undelivered_after: list[tuple[str, str]] = []
    for i, stream in enumerate(streams):
        groups, pending = replies[2 * i], replies[2 * i + 1]
        if isinstance(pending, dict) and pending.get("pending") and pending.get("min"):
            oldest.append(int(text(pending["min"]).split("-")[0]))
        if isinstance(groups, list):
            for group in groups:
                info = {text(k): v for k, v in group.items()}
                if text(info.get("name")) == keys.consumer_group:
                    undelivered_after.append((stream, text(info["last-delivered-id"])))
    async with redis.pipeline(transaction=False) as pipe:
        for stream, last in undelivered_after:
            pipe.xrange(stream, min=f"({last}", count=1)
        firsts = await pipe.execute(raise_on_error=False)
    for entries in firsts:
        if isinstance(entries, list) and entries:
            oldest.append(int(text(entries[0][0]).split("-")[0]))
    return max(0.0, time.time() - min(oldest) / 1000) if oldest else 0.0


def machine_idle_s() -> float:
    """Idle + iowait seconds of the whole machine so far, over every CPU (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / scale_out.CLK_TCK


async def state_bytes(redis: Any, prefix: str) -> int:
    """MEMORY USAGE of every key of this install except the heartbeat streams (a buffer the
    consumers trim, sized by traffic, not by the fleet): what tracking the workloads costs."""
    total = 0
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        if text(await redis.type(key)) == "stream":
            continue
        total += int(await redis.memory_usage(key, samples=0) or 0)
    return total


async def settled(conn: asyncpg.Connection, size: int, within: float) -> None:
    """Wait until every workload is RUNNING in the database (the warm-up transitions applied)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await conn.fetchval("SELECT count(*) FROM workloads WHERE state = 'RUNNING'") == size:
            return
        await asyncio.sleep(0.25)
    raise RuntimeError(
        f"not all {size} workloads RUNNING within {within:.0f} s of the first heartbeats"
    )


async def caught_up(redis: Any, keys: Keys, interval: float, within: float) -> float:
    """Seconds until the consumers are less than one heartbeat interval behind. Registering a big
    fleet under its own heartbeats leaves a backlog (`serve` spends its core on registrations);
    the steady window must not start on it. Not caught up within `within`: the window starts
    anyway and its lag says so (a result, not a failure)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await lag_seconds(redis, keys) < interval:
            break
        await asyncio.sleep(1.0)
    return round(time.monotonic() - started, 1)


def spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max": round(ordered[-1], 2),
    }


async def statusd_run(
    size: int,
    timing: Timing,
    database_url: str,
    env: dict[str, str],
    pids: list[int],
    redis_url: str,
    keys: Keys,
    api: str,
    push: int,
    slots: int,
) -> dict[str, Any]:
    """`pids`: serve, the consume processes, worker, beat, redis-server; the first `push` of them
    and redis-server are the push path."""
    fleet = Fleet(ids=[f"tr-{i:06d}" for i in range(size)])
    names = ["serve", *[f"consume-{i + 1}" for i in range(push - 1)], "worker", "beat", "redis"]
    runner = web.AppRunner(status_app(fleet), access_log=None)
    await runner.setup()
    status_port = ingest_bench.free_port()
    # Every endpoint of the fleet on one socket: a backlog for a sweep's worth of connects at
    # once, which a real fleet spreads over thousands of hosts.
    await web.TCPSite(runner, "127.0.0.1", status_port, backlog=4096).start()
    from statusd.redis_runtime import create_redis

    redis = create_redis(redis_url, 4)
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            # Heartbeats start with the first registration, as containers' do: with the loop
            # started only after a fleet of 200,000 had registered (8 minutes), the sweeper
            # rightly polled every workload left silent past STATUSD_START_TIMEOUT, and that
            # backlog of polls ran on into the steady window.
            t_start = time.monotonic()
            beats = asyncio.create_task(heartbeat_loop(http, api, fleet))
            try:
                await register(http, api, fleet, f"http://127.0.0.1:{status_port}")
                # Warm-up: every workload RUNNING (its first heartbeat applied), the backlog
                # worked off, and one more interval, so the steady phase starts with no backlog.
                await settled(conn, size, within=120 + size / 50)
                registered_s = time.monotonic() - t_start
                catch_up_s = await caught_up(redis, keys, fleet.interval, within=600 + size / 100)
                await asyncio.sleep(fleet.interval)
                rows0, sent0, t0 = await db_rows(conn), fleet.sent, time.monotonic()
                cpu0 = [scale_out.cpu_seconds([p]) for p in pids]
                own0, idle0 = time.process_time(), machine_idle_s()
                lags: list[float] = []
                steady_s = max(timing.steady_s, 2 * fleet.interval)
                while time.monotonic() - t0 < steady_s:
                    beating(beats)
                    lags.append(await lag_seconds(redis, keys))
                    await asyncio.sleep(0.25)
                cpu = [scale_out.cpu_seconds([p]) - c for p, c in zip(pids, cpu0, strict=True)]
                steady_beats = fleet.sent - sent0
                steady_s = time.monotonic() - t0
                # Where the two cores went: each process, this bench (client + status server), idle
                cores = {
                    **{name: round(c / steady_s, 2) for name, c in zip(names, cpu, strict=True)},
                    "bench": round((time.process_time() - own0) / steady_s, 2),
                    "idle": round((machine_idle_s() - idle0) / steady_s, 2),
                }
                rows = await db_rows(conn) - rows0
                tracked_bytes = await state_bytes(redis, keys.prefix)

                # Detection: 1% finish silently, 1% die (the endpoint hangs).
                k = max(20, size // DETECT_SHARE) // 2
                finished, dead = fleet.ids[:k], fleet.ids[k : 2 * k]
                for wid in finished:
                    fleet.answer[wid] = "SUCCEEDED"
                for wid in dead:
                    fleet.answer[wid] = "HANG"
                fleet.silent.update(finished + dead)
                # A heartbeat already on its way still counts: wait one slice, then start the clock
                # at each workload's last heartbeat (at most one interval ago).
                await asyncio.sleep(fleet.interval / 10 + 0.2)
                since = {w: time.monotonic() for w in finished + dead}
                want = {**{w: "SUCCEEDED" for w in finished}, **{w: "UNREACHABLE" for w in dead}}
                silence = fleet.interval + timing.heartbeat_ttl * 2 / 3
                bound_done = silence + timing.sweep_interval + timing.poll_timeout
                bound_dead = bound_done + (timing.unreachable_after - 1) * (
                    timing.sweep_interval + timing.poll_timeout
                )
                seen = await wait_verdicts(conn, want, since, within=3 * bound_dead + 30)
                beating(beats)
            finally:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats
    finally:
        await conn.close()
        await redis.aclose()
        await runner.cleanup()
    return {
        "workloads": size,
        "heartbeat_interval_s": fleet.interval,
        "warm_up": {
            # registration with heartbeats running, until every workload was RUNNING
            "registered_s": round(registered_s, 1),
            # then until the consumers were less than one interval behind
            "catch_up_s": catch_up_s,
        },
        "steady": {
            "heartbeats": steady_beats,
            "heartbeats_per_s": round(steady_beats / steady_s, 1),
            "batches_answered_503": fleet.busy,
            "lag_p99_s": round(spread(lags)["p99"], 3) if lags else 0.0,
            "lag_s": spread(lags) if lags else {},
            # mean lag over each tenth of the window: falling, flat or growing
            "lag_trend_s": [
                round(statistics.fmean(lags[i * len(lags) // 10 : (i + 1) * len(lags) // 10]), 2)
                for i in range(10)
            ]
            if len(lags) >= 10
            else [],
            "cpu_cores": cores,
            # serve (+ consume) + redis-server: the push path; all: with the worker and beat
            "cpu_s_per_1000_heartbeats_serve_redis": round(
                (sum(cpu[:push]) + cpu[-1]) / max(1, steady_beats) * 1000, 4
            ),
            "cpu_s_per_1000_heartbeats_all": round(sum(cpu) / max(1, steady_beats) * 1000, 4),
            "redis_bytes_per_workload": round(tracked_bytes / size),
            "sql_rows_per_heartbeat": round(rows / max(1, steady_beats), 4),
        },
        "detection": {
            "finished_to_succeeded_s": spread([seen[w] for w in finished]),
            "bound_succeeded_s": round(bound_done, 1),
            "dead_to_unreachable_s": spread([seen[w] for w in dead]),
            "bound_unreachable_s": round(bound_dead, 1),
            "poll_slots": {"processes": WORKER_PROCESSES, "per_process": slots},
        },
    }


async def seed_run(size: int) -> dict[str, Any]:
    """The seed's beat task, ticks counted instead of slept; its polls are real HTTP requests."""
    fleet = Fleet(ids=[f"seed-{i:06d}" for i in range(size)])
    k = max(10, size // 100)
    finished = set(fleet.ids[:: size // k][:k])  # spread over the table, not the first rows
    for wid in finished:
        fleet.answer[wid] = "SUCCEEDED"
    runner = web.AppRunner(status_app(fleet), access_log=None)
    await runner.setup()
    port = ingest_bench.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    # The seed polls the rows polled longest ago, never-polled first, ties in table order: a
    # round robin over the table, so a queue in table order, polled rows going to its back, is
    # that order exactly (and linear per tick, where sorting the table was not at 200,000).
    order = collections.deque(fleet.ids)
    running = set(fleet.ids)
    stuck: list[float] = []
    try:
        async with aiohttp.ClientSession() as http:
            tick = 0
            while finished & running:
                batch = [order.popleft() for _ in range(min(SEED_ROWS_PER_TICK, len(order)))]
                tick += 1

                async def poll(wid: str, at: float) -> None:
                    async with http.get(f"http://127.0.0.1:{port}/status/{wid}") as response:
                        if (await response.json())["status"] == "SUCCEEDED":
                            running.discard(wid)
                            stuck.append(at)

                await asyncio.gather(*(poll(w, tick * SEED_TICK_S) for w in batch))
                order.extend(w for w in batch if w in running)
    finally:
        await runner.cleanup()
    return {"workloads": size, "finished_to_succeeded_s": spread(stuck)}


@contextlib.contextmanager
def statusd_processes(
    timing: Timing,
    redis_url: str,
    prefix: str,
    database_url: str,
    tmp: Path,
    consume: int,
    max_rate: float | None,
    poll_concurrency: int,
) -> Iterator[tuple[dict[str, str], list[int], str]]:
    """serve [consume x N] worker beat, in that order in the pids yielded."""
    port = ingest_bench.free_port()
    env = {
        **scale_out.env_for(redis_url, prefix, database_url, port, tmp / "state"),
        **timing.env(),
        **({"STATUSD_MAX_HEARTBEATS_PER_S": str(max_rate)} if max_rate else {}),
        "STATUSD_POLL_CONCURRENCY": str(poll_concurrency),
    }
    subprocess.run([*scale_out.statusd(), "migrate"], env=env, check=True, capture_output=True)
    serve = [*scale_out.statusd(), "serve", *(["--consumers", "0"] if consume else [])]
    commands = [
        (serve, env),
        *[([*scale_out.statusd(), "consume"], env)] * consume,
        ([*scale_out.statusd(), "worker", "-c", str(WORKER_PROCESSES), "-Q", "sweep,poll"], env),
        ([*scale_out.statusd(), "beat", "--schedule", str(tmp / f"beat-{prefix}")], env),
    ]
    pids: list[int] = []
    with scale_out.processes(commands, tmp, started=pids):
        api = f"http://127.0.0.1:{port}"
        asyncio.run(scale_out.wait_http(f"{api}/readyz"))
        yield env, pids, api


def measure(
    sizes: list[int],
    timing: Timing,
    admin_url: str,
    consume: int,
    max_rate: float | None,
    slots: int | None = None,
) -> dict[str, Any]:
    from statusd.redis_runtime import EmbeddedRedis

    out: dict[str, Any] = {"statusd": [], "seed": []}
    with tempfile.TemporaryDirectory(prefix="statusd-detect-") as tmp_name:
        tmp = Path(tmp_name)
        redis = EmbeddedRedis(tmp / "redis", appendonly=False)
        redis_url = redis.start()
        try:
            redis_pid = int(
                subprocess.run(
                    ["redis-cli", "-u", redis_url, "info", "server"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.split("process_id:")[1]
                .split()[0]
            )
            for size in sizes:
                prefix = f"benchdetect{size}:"
                per_process = slots or poll_slots(size)
                print(f"-- statusd, {size:,} trainings ...", file=sys.stderr, flush=True)
                with scale_out.fresh_database(admin_url) as db:
                    database_url = db.replace("postgresql://", "postgresql+asyncpg://")
                    with statusd_processes(
                        timing,
                        redis_url,
                        prefix,
                        database_url,
                        tmp,
                        consume,
                        max_rate,
                        per_process,
                    ) as (
                        _,
                        pids,
                        api,
                    ):
                        out["statusd"].append(
                            asyncio.run(
                                statusd_run(
                                    size,
                                    timing,
                                    db,
                                    {},
                                    [*pids, redis_pid],
                                    redis_url,
                                    Keys(prefix),
                                    api,
                                    push=1 + consume,
                                    slots=per_process,
                                )
                            )
                        )
                # Printed as soon as it exists: the seed's run that follows is long at large sizes.
                print(json.dumps(out["statusd"][-1]), file=sys.stderr, flush=True)
                print(f"-- seed design, {size:,} trainings ...", file=sys.stderr, flush=True)
                out["seed"].append(asyncio.run(seed_run(size)))
        finally:
            redis.stop()
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "| workloads | heartbeat every | lag p99 | CPU s / 1,000 hb: serve+redis (all) | Redis B / workload | SQL rows / hb "
        "| finished -> SUCCEEDED p50 / max (bound) | dead -> UNREACHABLE p50 / max (bound) "
        "| seed design: finished stays RUNNING p50 / max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run, seed in zip(result["statusd"], result["seed"], strict=True):
        s, d, z = run["steady"], run["detection"], seed["finished_to_succeeded_s"]
        lines.append(
            f"| {run['workloads']:,} | {run['heartbeat_interval_s']:g} s | {s['lag_p99_s']} s "
            f"| {s['cpu_s_per_1000_heartbeats_serve_redis']} ({s['cpu_s_per_1000_heartbeats_all']}) | {s['redis_bytes_per_workload']} | {s['sql_rows_per_heartbeat']} "
            f"| {d['finished_to_succeeded_s']['p50']} / {d['finished_to_succeeded_s']['max']} s ({d['bound_succeeded_s']} s) "
            f"| {d['dead_to_unreachable_s']['p50']} / {d['dead_to_unreachable_s']['max']} s ({d['bound_unreachable_s']} s) "
            f"| {z['p50']:,.0f} / {z['max']:,.0f} s |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="300 trainings, TTL 3 s: a smoke run")
    parser.add_argument(
        "--workloads", default=None, help="comma-separated fleet sizes (default 1000,10000)"
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--consume",
        type=int,
        default=0,
        help="N > 0: serve --consumers 0 beside N `statusd consume` processes (default: serve applies)",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=None,
        help="STATUSD_MAX_HEARTBEATS_PER_S: the fleet-wide rate statusd paces heartbeats to "
        "(default: the setting's; 200,000 workloads every 10 s need 20000)",
    )
    parser.add_argument(
        "--steady-s",
        type=float,
        default=None,
        help="length of the steady window in seconds (default 30, at least two intervals): "
        "long enough to tell a bounded lag from a slowly growing one",
    )
    parser.add_argument(
        "--poll-slots",
        type=int,
        default=None,
        help="STATUSD_POLL_CONCURRENCY per worker process (default: the sizing rule, poll_slots)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    sizes = [int(x) for x in (args.workloads or ("300" if args.quick else "1000,10000")).split(",")]
    timing = QUICK if args.quick else FULL
    if args.steady_s is not None:
        timing = dataclasses.replace(timing, steady_s=args.steady_s)
    started = datetime.now(UTC)
    try:
        result: dict[str, Any] = {
            "ok": True,
            **measure(sizes, timing, args.pg, args.consume, args.max_rate, args.poll_slots),
        }
    except Exception as exc:  # a failed run is reported and exits non-zero; slowness never does
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(f"FAILED: {result['error']}", file=sys.stderr)
    if result["ok"]:
        print(table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    path = (
        args.out
        / f"{started.strftime('%Y-%m-%dT%H%M%SZ')}-detection{'-quick' if args.quick else ''}.json"
    )
    doc = {
        "started": started.isoformat(),
        "consume_processes": args.consume,
        "max_heartbeats_per_s": args.max_rate,
        "timing": asdict(timing),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "result": result,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
