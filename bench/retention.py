"""Retention benchmark: a year of history for 20,000 workloads, pruned while statusd serves.

    .venv/bin/python bench/retention.py [--deployments 8000] [--trainings 12000]
        [--flips 243] [--noisy 2000] [--refused 1000] [--baseline-s 120] [--json]

PostgreSQL only (BENCH_PG_URL, default postgresql://postgres@127.0.0.1:5432/postgres); creates
its own database and drops it at the end. Steps:
  seed      generate_series straight into the migrated schema: deployments live for a year
            (READY <-> DEGRADED every 36 h, one flip in five an UNREACHABLE spell), trainings of
            a day each spread over the year (half of the long-finished ones deregistered), one
            delivered outbox row per transition, and `--refused` refused observations for each
            of `--noisy` deployments (>= 5 million rows with the defaults)
  baseline  `statusd serve` (+ its consumers) on that database under a steady open-loop load
            for `--baseline-s`: heartbeats of 200 probe deployments (one in five changes state,
            so transitions and outbox rows are written) and API reads (a workload, a history
            page, a list page); p50/p99 per kind of request
  prune     the same load while `statusd prune` runs (a subprocess) until it is done; p50/p99
            again, the prune's own figures (rows and batches per table, longest batch)
It checks: the prune leaves nothing out of policy (a dry run then counts 0 everywhere), every row
within policy is still there (count and sum of ids per table, rows of the seed only), and the
availability reports of the pruned trainings and of a pruned month are the same before and
after. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import ingest as ingest_bench  # noqa: E402
import scale_out  # noqa: E402

from statusd.availability.breakdown import availability, report_json  # noqa: E402
from statusd.availability.history import Selection  # noqa: E402
from statusd.availability.timeline import Span  # noqa: E402
from statusd.db import create_engine  # noqa: E402
from statusd.lifecycle import Kind  # noqa: E402
from statusd.redis_runtime import EmbeddedRedis  # noqa: E402
from statusd.retention import prune  # noqa: E402
from statusd.settings import Settings  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PROBES = 200
HEARTBEATS_PER_S = 50.0
READS_PER_S = 15.0
WARM_UP_S = 15.0

SEED_SQL = """
INSERT INTO workloads (id, kind, state, generation, version, labels, created_at,
                       state_changed_at, deleted_at, poll_failures)
SELECT 'dep-' || lpad(g::text, 5, '0'), 'deployment', 'READY', 1, 0,
       json_build_object('team', 'team' || (g % 20)), $1::timestamptz - interval '365 days',
       $1::timestamptz - interval '1 day', NULL, 0
FROM generate_series(1, $2::int) g;

INSERT INTO workloads (id, kind, state, generation, version, labels, created_at,
                       state_changed_at, deleted_at, poll_failures)
SELECT 'train-' || lpad(g::text, 5, '0'), 'training', 'SUCCEEDED', 1, 0,
       json_build_object('team', 'team' || (g % 20)),
       $1::timestamptz - make_interval(days => (g % 360) + 2, hours => 12),
       $1::timestamptz - make_interval(days => (g % 360) + 1, hours => 12),
       CASE WHEN g % 2 = 0 AND (g % 360) + 1 > 100
            THEN $1::timestamptz - make_interval(days => (g % 360) + 1, hours => 11) END,
       0
FROM generate_series(1, $3::int) g;

-- Deployments: DEPLOYING, READY, then a flip every 36 h (odd flips away from READY).
INSERT INTO transitions (workload_id, generation, kind, from_state, to_state, source,
                         observed_at, recorded_at)
SELECT w.id, 1, 'deployment', x.from_state, x.to_state, 'push', x.at, x.at
FROM (SELECT g, k,
             $1::timestamptz - interval '365 days' + make_interval(hours => 36 * k, secs => g % 3600) AS at,
             CASE WHEN k = 0 THEN 'PENDING' WHEN k = 1 THEN 'DEPLOYING'
                  WHEN k % 2 = 0 THEN 'READY'
                  WHEN k % 10 = 3 THEN 'UNREACHABLE' ELSE 'DEGRADED' END AS from_state,
             CASE WHEN k = 0 THEN 'DEPLOYING' WHEN k = 1 THEN 'READY'
                  WHEN k % 2 = 1 THEN 'READY'
                  WHEN k % 10 = 2 THEN 'UNREACHABLE' ELSE 'DEGRADED' END AS to_state
      FROM generate_series(0, $4::int - 1) k, generate_series(1, $2::int) g
      ORDER BY k, g) x
JOIN workloads w ON w.id = 'dep-' || lpad(x.g::text, 5, '0');

-- Trainings: STARTING, RUNNING, SUCCEEDED within their day.
INSERT INTO transitions (workload_id, generation, kind, from_state, to_state, source,
                         observed_at, recorded_at)
SELECT 'train-' || lpad(g::text, 5, '0'), 1, 'training', s.from_state, s.to_state, 'push',
       $1::timestamptz - make_interval(days => (g % 360) + 2, hours => 12) + s.after,
       $1::timestamptz - make_interval(days => (g % 360) + 2, hours => 12) + s.after
FROM generate_series(1, $3::int) g,
     (VALUES ('PENDING', 'STARTING', interval '1 minute'),
             ('STARTING', 'RUNNING', interval '5 minutes'),
             ('RUNNING', 'SUCCEEDED', interval '1 day')) AS s(from_state, to_state, after);

UPDATE workloads w SET state = t.to_state, state_changed_at = t.recorded_at
FROM (SELECT DISTINCT ON (workload_id) workload_id, to_state, recorded_at FROM transitions
      WHERE kind = 'deployment' ORDER BY workload_id, id DESC) t
WHERE w.id = t.workload_id;

INSERT INTO outbox (event_key, transition_id, workload_id, target, destination, payload, status,
                    attempts, next_attempt_at, created_at, synced_at)
SELECT 'transition:' || id, id, workload_id, 'main', '', '{}'::json, 'synced', 1, recorded_at, recorded_at, recorded_at
FROM transitions ORDER BY id;

INSERT INTO refused_observations (workload_id, current_state, requested_state, source, rule,
                                  workload_version, seq, observed_at, recorded_at)
SELECT 'dep-' || lpad(g::text, 5, '0'), 'READY', 'DEPLOYING', 'push',
       'never backward: DEPLOYING is before READY', 0, k,
       $1::timestamptz - make_interval(secs => ($5::int - k) * 5000),
       $1::timestamptz - make_interval(secs => ($5::int - k) * 5000)
FROM generate_series(1, $5::int) k, generate_series(1, $6::int) g
ORDER BY k, g;
ANALYZE;
"""

# Rows within policy (of the seed: ids up to the seed's last) that a prune must leave alone.
KEPT_SQL = {  # $1: the seed's last id, $2: the history cutoff, $3: the outbox cutoff
    "transitions": """
        SELECT count(*), coalesce(sum(t.id), 0) FROM transitions t JOIN workloads w
        ON w.id = t.workload_id WHERE t.id <= $1 AND w.deleted_at IS NULL
        AND (w.state NOT IN ('SUCCEEDED', 'FAILED', 'STOPPED') OR w.state_changed_at >= $2)
        AND $3::timestamptz IS NOT NULL""",
    "refused_observations": """
        SELECT count(*), coalesce(sum(id), 0) FROM (
          SELECT id, row_number() OVER (PARTITION BY workload_id ORDER BY id DESC) AS rn
          FROM refused_observations WHERE id <= $1) r
        WHERE rn <= 100 AND $2::timestamptz IS NOT NULL AND $3::timestamptz IS NOT NULL""",
    "outbox": """
        SELECT count(*), coalesce(sum(id), 0) FROM outbox
        WHERE id <= $1 AND (created_at >= $3 OR status = 'pending')
        AND $2::timestamptz IS NOT NULL""",
    "workloads": """
        SELECT count(*), $1::bigint * 0 FROM workloads
        WHERE (deleted_at IS NULL OR deleted_at >= $2 OR $3::timestamptz IS NULL)
        AND id NOT LIKE 'probe-%'""",
}


@dataclass
class Latencies:
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0

    def add(self, kind: str, seconds: float) -> None:
        self.by_kind.setdefault(kind, []).append(seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for kind, values in sorted(self.by_kind.items()):
            values.sort()
            n = len(values)
            out[kind] = {
                "requests": n,
                "p50_ms": round(values[n // 2] * 1000, 2),
                "p99_ms": round(values[min(n - 1, int(n * 0.99))] * 1000, 2),
            }
        return out


async def load(
    api: str, tokens: dict[str, str], seeded: list[str], live: list[str], stop: asyncio.Event
) -> Latencies:
    """Open-loop: requests start on schedule whatever earlier ones are doing."""
    lat = Latencies()
    auth = {"Authorization": f"Bearer {scale_out.API_TOKEN}"}
    chance = random.Random(11)
    seqs = dict.fromkeys(tokens, 0)
    pending: set[asyncio.Task[None]] = set()

    async def timed(kind: str, coro: Any) -> None:
        began = time.perf_counter()
        try:
            async with coro as response:
                await response.read()
                if response.status >= 300:
                    lat.errors += 1
        except aiohttp.ClientError:
            lat.errors += 1
        lat.add(kind, time.perf_counter() - began)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:
        began = time.perf_counter()
        sent_hb = sent_read = 0
        ids = list(tokens)
        while not stop.is_set():
            elapsed = time.perf_counter() - began
            while sent_hb < elapsed * HEARTBEATS_PER_S:
                wid = ids[sent_hb % len(ids)]
                seqs[wid] += 1
                state = "DEGRADED" if seqs[wid] % 5 == 0 else "READY"
                body = {"workload_id": wid, "status": state, "seq": seqs[wid]}
                headers = {"Authorization": f"Bearer {tokens[wid]}"}
                req = http.post(f"{api}/v1/heartbeats", json=body, headers=headers)
                pending.add(asyncio.create_task(timed("heartbeat", req)))
                sent_hb += 1
            while sent_read < elapsed * READS_PER_S:
                pick = sent_read % 3
                if pick == 0:
                    req = http.get(f"{api}/v1/workloads/{chance.choice(seeded)}", headers=auth)
                    kind = "api_get_workload"
                elif pick == 1:
                    url = f"{api}/v1/workloads/{chance.choice(live)}/transitions?limit=100"
                    req, kind = http.get(url, headers=auth), "api_history_page"
                else:
                    req, kind = http.get(f"{api}/v1/workloads?limit=100", headers=auth), "api_list"
                pending.add(asyncio.create_task(timed(kind, req)))
                sent_read += 1
            pending = {t for t in pending if not t.done()}
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
    return lat


async def measure_while(
    api: str, tokens: dict[str, str], seeded: list[str], live: list[str], until: Any
) -> Latencies:
    stop = asyncio.Event()
    task = asyncio.create_task(load(api, tokens, seeded, live, stop))
    await until
    stop.set()
    return await task


async def kept(
    conn: asyncpg.Connection, last: dict[str, int], now: datetime
) -> dict[str, list[int]]:
    """(count, sum of ids) of the seed's rows within policy, per table."""
    history_cut = now - timedelta(days=93)
    outbox_cut = now - timedelta(days=7)
    out = {}
    for table, sql in KEPT_SQL.items():
        row = await conn.fetchrow(sql, last.get(table, 0), history_cut, outbox_cut)
        out[table] = [int(row[0]), int(row[1])]
    return out


async def figures(url: str, midnight: datetime) -> list[dict[str, object]]:
    engine = create_engine(url)
    try:
        year = Span((midnight - timedelta(days=365)).timestamp(), midnight.timestamp())
        month = Span(
            (midnight - timedelta(days=200)).timestamp(),
            (midnight - timedelta(days=170)).timestamp(),
        )
        trainings = await availability(
            engine, None, None, year, Selection(kinds=(Kind.TRAINING,)), "label:team"
        )
        everyone = await availability(engine, None, None, month, None, "kind")
        return [report_json(trainings), report_json(everyone)]
    finally:
        await engine.dispose()


def prune_cli(env: dict[str, str], dry: bool) -> dict[str, Any]:
    done = subprocess.run(
        [*scale_out.statusd(), "prune", "--json", *(["--dry-run"] if dry else [])],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"statusd prune failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


async def run(args: argparse.Namespace, url: str, tmp: Path) -> dict[str, Any]:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    result: dict[str, Any] = {"args": vars(args)}
    try:
        began = time.monotonic()
        await conn.execute("SET synchronous_commit = off")
        values = {
            "$1": f"'{now.isoformat()}'",
            "$2": str(args.deployments),
            "$3": str(args.trainings),
            "$4": str(args.flips),
            "$5": str(args.refused),
            "$6": str(args.noisy),
        }
        for statement in SEED_SQL.split(";\n"):
            if statement.strip():
                for name, value in values.items():
                    statement = statement.replace(name, value)
                await conn.execute(statement)
        rows = {}
        last = {}
        for table in ("workloads", "transitions", "outbox", "refused_observations"):
            rows[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            if table != "workloads":
                last[table] = int(await conn.fetchval(f"SELECT max(id) FROM {table}"))
        result["seed"] = {
            "rows": rows,
            "total_rows": sum(rows.values()),
            "seconds": round(time.monotonic() - began, 1),
            "database_bytes": int(
                await conn.fetchval("SELECT pg_database_size(current_database())")
            ),
        }
        # Bytes per row with indexes and TOAST (what the README's rows-per-day table is sized by).
        result["seed"]["bytes_per_row"] = {
            table: round(
                int(await conn.fetchval(f"SELECT pg_total_relation_size('{table}')"))
                / max(rows[table], 1)
            )
            for table in rows
        }
        print(f"seeded: {result['seed']}", file=sys.stderr)
        figures_before = await figures(url, midnight)
    finally:
        await conn.close()

    redis = EmbeddedRedis(tmp / "redis", appendonly=False)
    redis_url = redis.start()
    try:
        port = ingest_bench.free_port()
        env = scale_out.env_for(redis_url, "retention:", url, port, tmp / "state")
        env["STATUSD_MAX_HEARTBEATS_PER_S"] = "100000"
        result["dry_run"] = prune_cli(env, dry=True)
        with scale_out.processes([([*scale_out.statusd(), "serve"], env)], tmp):
            api = f"http://127.0.0.1:{port}"
            await scale_out.wait_http(f"{api}/readyz")
            probes = [f"probe-{i:04d}" for i in range(PROBES)]
            async with aiohttp.ClientSession() as http:
                tokens = await scale_out.register(http, api, probes, "deployment")
            seeded = [f"dep-{g:05d}" for g in range(1, args.deployments + 1)] + [
                f"train-{g:05d}" for g in range(1, args.trainings + 1, 2)
            ]
            live = [f"dep-{g:05d}" for g in range(1, args.deployments + 1)]

            await measure_while(api, tokens, seeded, live, asyncio.sleep(WARM_UP_S))
            baseline = await measure_while(
                api, tokens, seeded, live, asyncio.sleep(args.baseline_s)
            )
            load_baseline = os.getloadavg()[0]  # the machine is shared: say how busy it was
            began = time.monotonic()
            cut_at = datetime.now(UTC)  # the prune's clock, within a second
            conn = await asyncpg.connect(dsn)
            try:
                kept_before = await kept(conn, last, cut_at)
            finally:
                await conn.close()
            pruning = asyncio.create_task(asyncio.to_thread(prune_cli, env, False))
            during = await measure_while(api, tokens, seeded, live, pruning)
            result["prune"] = pruning.result()
            result["prune"]["wall_s"] = round(time.monotonic() - began, 1)
        result["latency"] = {
            "load_average_1m": {"baseline_end": load_baseline, "prune_end": os.getloadavg()[0]},
            "baseline": baseline.summary(),
            "baseline_errors": baseline.errors,
            "during_prune": during.summary(),
            "during_prune_errors": during.errors,
        }
        result["p99_ratio"] = {
            kind: round(
                during.summary()[kind]["p99_ms"] / max(baseline.summary()[kind]["p99_ms"], 1e-6), 2
            )
            for kind in baseline.summary()
        }
        # What is left out of policy by the prune's own clock (rows keep ageing meanwhile).
        engine = create_engine(url)
        try:
            left = await prune(engine, Settings(database_url=url), dry_run=True, now=cut_at)
        finally:
            await engine.dispose()
        result["after_dry_run"] = left.as_json()
    finally:
        redis.stop()

    conn = await asyncpg.connect(dsn)
    try:
        result["kept"] = {"before": kept_before, "after": await kept(conn, last, cut_at)}
        result["kept_untouched"] = result["kept"]["after"] == kept_before
        result["database_bytes_after"] = int(
            await conn.fetchval("SELECT pg_database_size(current_database())")
        )
        rows_after = {}
        for table in (
            "workloads",
            "transitions",
            "outbox",
            "refused_observations",
            "availability_days",
        ):
            rows_after[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        result["rows_after"] = rows_after
    finally:
        await conn.close()
    result["availability_same"] = await figures(url, midnight) == figures_before
    result["availability_sample"] = figures_before[0]["total"]
    left = result["after_dry_run"]["tables"]
    result["within_policy"] = all(t["rows"] == 0 for t in left.values())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deployments", type=int, default=8000)
    parser.add_argument("--trainings", type=int, default=12000)
    parser.add_argument("--flips", type=int, default=243, help="transitions per deployment")
    parser.add_argument("--noisy", type=int, default=2000, help="deployments with refusals")
    parser.add_argument("--refused", type=int, default=1000, help="refusals per noisy one")
    parser.add_argument("--baseline-s", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="statusd-retention-") as tmp_name:
        with scale_out.fresh_database(ADMIN_URL) as url:
            subprocess.run(
                [*scale_out.statusd(), "migrate"],
                env={**os.environ, "STATUSD_DATABASE_URL": url},
                check=True,
                capture_output=True,
            )
            result = asyncio.run(run(args, url, Path(tmp_name)))
    out = ROOT / "bench" / "results" / f"retention-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(
            json.dumps(
                {
                    k: result[k]
                    for k in (
                        "seed",
                        "p99_ratio",
                        "within_policy",
                        "kept_untouched",
                        "availability_same",
                    )
                },
                indent=2,
                default=str,
            )
        )
        print(json.dumps(result["latency"], indent=2))
        print(json.dumps(result["prune"], indent=2))
    ok = result["within_policy"] and result["kept_untouched"] and result["availability_same"]
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
