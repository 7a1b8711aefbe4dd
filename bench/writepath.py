"""Write-path benchmark: what happens after a state change, each against plain code in the same run.

    .venv/bin/python bench/writepath.py [--quick] [--out bench/results]

Scenarios (each baseline measured in the same run, same machine, same loopback peer):
  transition storm    20,000 RUNNING trainings report SUCCEEDED at once through the real ingest
                      of a `statusd serve` vs plain asyncpg (lock + UPDATE + history + outbox, one
                      transaction each, 10 connections) (bench/storm.py); also with a real
                      `statusd worker` draining the outbox beside it (full runs only)
  sync drain          statusd.sync.drain over PostgreSQL outbox rows vs a plain aiohttp PUT loop,
                      32 in flight, main API answering in 5 ms (bench/sync_drain.py)
  sync drain, 20% 5xx the same with one answer in five a 503 (both retry; statusd with backoff)
  sweep storm         5,000 silent trainings, 10% of endpoints hanging: one sweep and its polls on
                      2 worker processes vs a plain aiohttp poller, 100 in flight, same 2 s timeout
                      (bench/sweep_storm.py); here the ratio is of TIMES, so lower is better
Prints one table with ratios, writes bench/results/<UTC date>.json, and exits non-zero if a
scenario FAILED (an error, rows not delivered); never because a figure was slow.
Needs PostgreSQL (BENCH_PG_URL, default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import storm  # noqa: E402
import sweep_storm  # noqa: E402
import sync_drain  # noqa: E402

Scenario = Callable[[], Awaitable[dict[str, Any]]]


def scenarios(quick: bool) -> dict[str, Scenario]:
    rows = 300 if quick else 5000
    stale = 200 if quick else 5000
    storm_n = 300 if quick else 20_000
    return {
        "transition storm": lambda: storm.run(storm_n),
        **(
            {}
            if quick
            else {"transition storm, sync beside it": lambda: storm.run(storm_n, with_sync=True)}
        ),
        "sync drain": lambda: sync_drain.run(rows, 32, 5.0),
        "sync drain, 20% 5xx": lambda: sync_drain.run(rows, 32, 5.0, error_ratio=0.2),
        "sweep storm": lambda: sweep_storm.run(stale, 2),
    }


def run_all(quick: bool) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, scenario in scenarios(quick).items():
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = {"ok": True, **asyncio.run(scenario())}
        except Exception as exc:
            traceback.print_exc()
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return results


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| scenario | statusd | plain code, same work | ratio | goal | notes |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if not r["ok"]:
            lines.append(f"| {name} | FAILED | | | | {r['error']} |")
            continue
        lines.append(
            f"| {name} | {r['statusd']} | {r['baseline']} | {r['ratio']:.2f} | "
            f"{'<=' if r.get('goal_is_max') else '>='} {r['goal_ratio']} | {r.get('notes', '')} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    started = datetime.now(UTC)
    results = run_all(args.quick)
    print(table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y-%m-%dT%H%M%SZ")
    path = args.out / f"{stamp}{'-quick' if args.quick else ''}.json"
    doc = {
        "started": started.isoformat(),
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
