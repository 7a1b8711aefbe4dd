"""CPU each statusd process spends to start: `worker`, `beat`, `serve` and one-shot verbs.

Each kind is started RUNS times against a fresh SQLite database and the Redis on 127.0.0.1:6379
(its own key prefix and db index), and the CPU it used until ready is read with psutil
(user + system of the process and all its descendants, the exited ones included through
`children_*`). Ready means: `worker` logs " ready.", `beat` logs "beat: Starting", `serve` answers
/healthz; a one-shot verb is measured to its exit. Run with the repository's venv:

    .venv/bin/python -m compileall -q statusd && .venv/bin/python bench/startup_cpu.py [kind...]

STATUSD_TREES=/path/to/other/checkout:... measures those checkouts' `statusd` package too (with
this venv's packages; e.g. `git archive main | tar -x -C /tmp/base`, compiled the same way),
alternating run by run with this one, so both see the same load on a shared machine.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil

RUNS = int(os.environ.get("RUNS", "3"))
TREES = [t for t in os.environ.get("STATUSD_TREES", "").split(":") if t]
# Another checkout's package, ahead of this venv's editable install of this one.
OTHER_TREE = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
    "sys.path.insert(0, {tree!r}); from statusd.cli import main; main()"
)


def statusd_command(tree: str | None) -> list[str]:
    if tree is None:
        return [str(Path(sys.executable).with_name("statusd"))]
    return [sys.executable, "-c", OTHER_TREE.format(tree=tree)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of `proc` and every descendant alive now (reaped ones are in children_*)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
        if p is proc:
            total += t.children_user + t.children_system
    return total


def base_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATUSD_")}
    env.update(
        STATUSD_DATABASE_URL=f"sqlite+aiosqlite:///{work / 'statusd.db'}",
        STATUSD_REDIS_URL="redis://127.0.0.1:6379/13",
        STATUSD_REDIS_PREFIX=f"bench-{uuid.uuid4().hex[:8]}",
        STATUSD_STATE_DIR=str(work / "state"),
        STATUSD_API_TOKEN="bench-token-" + "x" * 32,
        STATUSD_SECRET="bench-secret-" + "y" * 40,
        STATUSD_LOG_FORMAT="console",
    )
    return env


def run_until(args: list[str], env: dict[str, str], log: Path, ready: Callable[[], bool]) -> float:
    with log.open("wb") as out:
        popen = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc = psutil.Process(popen.pid)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            if ready():
                return tree_cpu(proc)
            if popen.poll() is not None:
                raise RuntimeError(f"{args} exited {popen.returncode}:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
        raise RuntimeError(f"{args} not ready within 90 s:\n{log.read_text()[-3000:]}")
    finally:
        kids = proc.children(recursive=True) if popen.poll() is None else []
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(20)
        except subprocess.TimeoutExpired:
            popen.kill()
        for k in kids:
            try:
                k.kill()
            except psutil.NoSuchProcess:
                pass


def run_to_exit(args: list[str], env: dict[str, str], log: Path) -> float:
    with log.open("wb") as out:
        popen = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    # The exited process's own CPU and its reaped children's, as wait4 reports them on reaping.
    _, status, usage = os.wait4(popen.pid, 0)
    popen.returncode = os.waitstatus_to_exitcode(status)
    if popen.returncode != 0:
        raise RuntimeError(f"{args} exited {popen.returncode}:\n{log.read_text()[-3000:]}")
    return usage.ru_utime + usage.ru_stime


def log_has(log: Path, needle: str) -> Callable[[], bool]:
    return lambda: needle in log.read_text(errors="replace")


def healthz(port: int) -> Callable[[], bool]:
    def ok() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5) as r:
                return r.status == 200
        except OSError:
            return False

    return ok


def measure(kind: str, work: Path, env: dict[str, str], statusd: list[str]) -> float:
    log = work / f"{kind}-{uuid.uuid4().hex[:6]}.log"
    if kind == "worker":
        args = [*statusd, "worker", "--queues", "sweep,poll", "--concurrency", "2"]
        return run_until(args, env, log, log_has(log, " ready."))
    if kind == "beat":
        args = [*statusd, "beat", "--schedule", str(work / f"beat-{uuid.uuid4().hex[:6]}")]
        return run_until(args, env, log, log_has(log, "beat: Starting"))
    if kind == "serve":
        port = free_port()
        env = {**env, "STATUSD_PORT": str(port)}
        return run_until([*statusd, "serve"], env, log, healthz(port))
    if kind == "report-help":
        return run_to_exit([*statusd, "report", "--help"], env, log)
    if kind == "report":
        return run_to_exit([*statusd, "report", "stale"], env, log)
    if kind == "migrate":
        return run_to_exit([*statusd, "migrate"], env, log)
    raise SystemExit(f"unknown kind {kind}")


KINDS = ["worker", "beat", "serve", "report-help", "report", "migrate"]


def main() -> None:
    kinds = sys.argv[1:] or KINDS
    with tempfile.TemporaryDirectory(prefix="statusd-startup-") as tmp:
        work = Path(tmp)
        env = base_env(work)
        trees: list[str | None] = [None, *TREES]
        subprocess.run(
            [*statusd_command(None), "migrate"], env=env, check=True, capture_output=True
        )
        for kind in kinds:
            samples: dict[str | None, list[float]] = {t: [] for t in trees}
            for _ in range(RUNS):
                for tree in trees:
                    samples[tree].append(measure(kind, work, env, statusd_command(tree)))
            for tree, found in samples.items():
                print(
                    f"{kind:12s} {tree or 'this checkout':24s} median "
                    f"{statistics.median(found):5.2f} s CPU  "
                    f"runs: {', '.join(f'{s:.2f}' for s in found)}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
