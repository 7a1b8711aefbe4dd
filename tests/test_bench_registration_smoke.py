"""`bench/registration.py --quick` still runs end to end (tiny sizes), so `make bench` cannot rot.

No timing assertions: only that every phase registered what it was asked to, the batch phase
went through POST /v1/workloads:batch, and the figures docs/benchmarks.md is built from are
reported, new PostgreSQL sessions included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.databases import PG_HOST, PG_PORT, PG_USER, ROOT, require_postgres


@pytest.mark.slow
@pytest.mark.scale
def test_the_registration_bench_measures_single_batch_and_under_heartbeats(
    tmp_path: Path,
) -> None:
    require_postgres()
    done = subprocess.run(
        [sys.executable, "bench/registration.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "BENCH_PG_URL": f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [written] = list(tmp_path.glob("registration-*-quick.json"))
    figures = json.loads(written.read_text())
    phases = {p["name"]: p for p in figures["phases"]}
    assert set(phases) == {"single", "batch", "single, beating", "batch, beating"}
    for phase in phases.values():
        assert phase["registered"] == figures["n"] and phase["rate"] > 0, phase
        assert phase["new_sessions"] >= 0
    assert phases["single, beating"]["beats_per_s"] > 0
    # (the batch phase under heartbeats is too short at --quick sizes to count beats in it)
    assert set(figures["ratios"]) == {
        "batch / single",
        "single beating / single",
        "batch beating / batch",
    }
    assert "| batch |" in done.stdout
