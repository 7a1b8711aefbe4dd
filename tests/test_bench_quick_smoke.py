"""The quick benches (`bench/writepath.py`, `bench/steady_cpu.py`) still run end to end (tiny
sizes), so `make bench` cannot rot.

No timing assertions: only that every scenario finished, delivered everything, and reported the
figures the table and docs/benchmarks.md are built from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.databases import PG_HOST, PG_PORT, PG_USER, ROOT, require_postgres


def run_quick(script: str, out: Path) -> subprocess.CompletedProcess[str]:
    """`bench/<script> --quick --out <out>` against the test PostgreSQL; it must exit 0."""
    require_postgres()
    done = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "BENCH_PG_URL": f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.slow
@pytest.mark.scale
def test_the_quick_bench_runs_every_scenario_and_writes_its_results(tmp_path: Path) -> None:
    done = run_quick("writepath.py", tmp_path)
    [written] = list(tmp_path.glob("*-quick.json"))
    results = json.loads(written.read_text())["results"]
    assert {"sync drain", "sync drain, 20% 5xx", "sweep storm"} <= set(results)
    assert results["sweep storm"]["applied"] == 180  # every answering endpoint's SUCCEEDED
    for name, figures in results.items():
        assert figures["ok"], (name, figures)
        assert figures["ratio"] > 0
    for name in ("sync drain", "sync drain, 20% 5xx"):
        figures = results[name]
        # The drain claims and records in batches on at most two pooled connections: no
        # PostgreSQL session per row (before batching: about one per three rows).
        assert figures["new_db_sessions"] <= 2, figures
        # Counted at the main API: the drain's send slots never exceed STATUSD_SYNC_CONCURRENCY.
        assert 0 < figures["statusd_peak_in_flight"] <= figures["concurrency"], figures
    assert "| sync drain |" in done.stdout  # the table


@pytest.mark.slow
@pytest.mark.scale
def test_the_steady_cpu_bench_applies_what_it_sent_and_reports_both_sides(tmp_path: Path) -> None:
    """`bench/steady_cpu.py --quick`: statusd and the naive ingest each took heartbeats on both
    transports, statusd's were all applied (the run waits for an empty stream), and the ratio
    the goal is judged by is written."""
    done = run_quick("steady_cpu.py", tmp_path)
    [written] = list(tmp_path.glob("*-steady-cpu.json"))
    results = json.loads(written.read_text())["results"]
    assert set(results) == {"single", "batch"}
    for figures in results.values():
        for side in ("statusd", "naive"):
            assert figures[side]["heartbeats"] > 0, figures
            assert figures[side]["cpu_per_1000"] > 0, figures
        # Taking and applying: the statusd clock runs until the stream is empty.
        assert figures["statusd"]["applied_s"] >= figures["statusd"]["load_s"] > 0
        assert figures["ratio"] > 0
    assert "| single |" in done.stdout and "| batch |" in done.stdout
