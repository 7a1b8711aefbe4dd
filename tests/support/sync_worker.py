"""Real Celery sync workers (and beat) for the sync/alert end-to-end tests, plus transition makers.

Workers are `python -m celery -A statusd.celery.application worker -Q sync` subprocesses built
from the test's settings (the env), in their own session, always reaped. The broker is the test
redis-server on a db index of its own, flushed before and after, so Celery's keys of one test
never meet another's.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis as redis_sync
from sqlalchemy import func, select

from statusd.db import reading
from statusd.lifecycle import Kind, Source, State
from statusd.models import OutboxEntry, OutboxStatus, OutboxTarget
from statusd.registry import register
from statusd.settings import Settings
from statusd.transitions import Ledger, Observation, Outcome, apply_observation
from tests.conftest import settings_env
from tests.support.processes import ManagedProcess, start_statusd, stop_process

_O = OutboxEntry.__table__  # type: ignore[attr-defined]
BROKER_DBS = range(1, 16)


@contextmanager
def broker_db(redis_server: str) -> Iterator[str]:
    """A broker URL on a free db index of the test redis (flushed before and after)."""
    base = redis_server.rsplit("/", 1)[0]
    chosen = None
    for index in random.sample(list(BROKER_DBS), len(BROKER_DBS)):
        # A marker key claims the index for this test (each xdist worker has its own server; an
        # empty db also guards against a leftover of a crashed run).
        with redis_sync.Redis.from_url(f"{base}/{index}") as probe:
            if probe.dbsize() == 0 and probe.set("statusd-test-broker", "1", nx=True):
                chosen = index
                break
    if chosen is None:
        raise RuntimeError("no free redis db index for a Celery broker")
    url = f"{base}/{chosen}"
    try:
        yield url
    finally:
        with redis_sync.Redis.from_url(url) as db:
            db.flushdb()


def start_worker(env: dict[str, str], log_dir: Path, *, concurrency: int = 2) -> ManagedProcess:
    """`statusd worker --queues sync`; returns once it is ready to consume (bounded wait)."""
    proc = start_statusd(
        ["worker", "--queues", "sync", "--concurrency", str(concurrency)], env=env, log_dir=log_dir
    )
    wait_log(proc, "ready.", timeout=60)
    return proc


def start_beat(env: dict[str, str], log_dir: Path) -> ManagedProcess:
    """`statusd beat`: sends statusd.sync.drain_due every STATUSD_SYNC_INTERVAL."""
    schedule = log_dir / f"beat-{uuid.uuid4().hex[:6]}.schedule"
    proc = start_statusd(["beat", "--schedule", str(schedule)], env=env, log_dir=log_dir)
    wait_log(proc, "beat: Starting", timeout=60)
    return proc


def wait_log(proc: ManagedProcess, marker: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise AssertionError(f"{proc.args} exited ({proc.returncode}):\n{proc.log_tail()}")
        if marker in proc.log_tail(200_000):
            proc.remember_descendants()
            return
        time.sleep(0.1)
    raise AssertionError(
        f"{marker!r} not in the log of {proc.args} within {timeout}s:\n{proc.log_tail()}"
    )


def stop(proc: ManagedProcess) -> None:
    """Warm shutdown (SIGTERM), then reap whatever is left."""
    unclean: AssertionError | None = None
    try:
        if proc.returncode is None:
            stop_process(proc, signal.SIGTERM, timeout=20)
    except AssertionError as exc:
        unclean = exc  # reported below; teardown itself must not fail
    finally:
        proc.kill_tree()
    if unclean is not None:
        print(f"warning: warm shutdown of {proc.args} failed: {unclean}", file=sys.stderr)


MAIN_TOKEN = "main-api-token-" + "z" * 20
# Short clocks so outages, backoffs and expired leases play out in seconds. Lease = max(sync_lease,
# budget + 2 x timeout + 2) = 6 s: longer than any one row's sends, as in production.
E2E_SYNC = {
    "main_api_token": MAIN_TOKEN,
    "sync_timeout": 1.0,
    "sync_budget": 2.0,
    "sync_attempts": 4,
    "sync_backoff_max": 1.0,
    "sync_interval": 1.0,
    "sync_lease": 1.0,
    "sync_concurrency": 16,
    "sweep_interval": 3600.0,  # beat also schedules sweeps; nobody consumes queue sweep here
}


class Workers:
    """Sync worker / beat processes of one test; all reaped at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[ManagedProcess] = []

    def worker(self, settings: Settings, concurrency: int = 2) -> ManagedProcess:
        proc = start_worker(settings_env(settings), self.log_dir, concurrency=concurrency)
        self.procs.append(proc)
        return proc

    def beat(self, settings: Settings) -> ManagedProcess:
        proc = start_beat(settings_env(settings), self.log_dir)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            stop(proc)


# -- producing transitions through the real path -------------------------------------------------
DEPLOYMENT_WALK = (State.DEPLOYING, State.READY, State.DEGRADED, State.READY, State.DEGRADED)


async def register_fleet(ledger: Ledger, ids: Sequence[str], kind: Kind = Kind.DEPLOYMENT) -> None:
    for wid in ids:
        await register(ledger.engine, wid, kind, labels={"owner": "team-sync"})


async def walk(
    ledger: Ledger, wid: str, states: Sequence[State], *, pause: float = 0.0, seq_start: int = 1
) -> list[int]:
    """Push `states` in order (seq from `seq_start`) through apply_observation; returns the transition ids."""
    ids = []
    for seq, state in enumerate(states, start=seq_start):
        result = await apply_observation(ledger, Observation(wid, state, Source.PUSH, seq=seq))
        if result.outcome is not Outcome.APPLIED or result.transition is None:
            raise AssertionError(f"{wid}: {state} not applied: {result}")
        ids.append(result.transition.id)
        if pause:
            await asyncio.sleep(pause)
    return ids


async def produce(
    ledger: Ledger,
    ids: Sequence[str],
    states: Sequence[State] = DEPLOYMENT_WALK,
    *,
    parallel: int = 8,
    pause: float = 0.0,
) -> dict[str, list[int]]:
    """Walk every workload, `parallel` at a time, interleaving workloads like a real fleet."""
    sem = asyncio.Semaphore(parallel)
    out: dict[str, list[int]] = {}

    async def one(wid: str) -> None:
        async with sem:
            out[wid] = await walk(ledger, wid, states, pause=pause)

    await asyncio.gather(*(one(wid) for wid in ids))
    return out


async def outbox_counts(ledger: Ledger, target: OutboxTarget = OutboxTarget.MAIN) -> dict[str, int]:
    async with reading(ledger.engine) as conn:
        rows = await conn.execute(
            select(_O.c.status, func.count()).where(_O.c.target == target).group_by(_O.c.status)
        )
        counts = {str(OutboxStatus(s).value): int(n) for s, n in rows}
    return {s.value: counts.get(s.value, 0) for s in OutboxStatus}


async def outbox_rows(ledger: Ledger, **where: Any) -> list[dict[str, Any]]:
    query = select(_O).order_by(_O.c.id)
    for name, value in where.items():
        query = query.where(_O.c[name] == value)
    async with reading(ledger.engine) as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def wait_outbox(
    ledger: Ledger,
    within: float,
    *,
    target: OutboxTarget = OutboxTarget.MAIN,
    pending: int = 0,
    what: str = "outbox drained",
    procs: Sequence[ManagedProcess] = (),
) -> dict[str, int]:
    """Bounded wait until `pending` rows of `target` are left; fails with worker logs otherwise."""
    deadline = time.monotonic() + within
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = await outbox_counts(ledger, target)
        if counts["pending"] == pending:
            return counts
        await asyncio.sleep(0.1)
    logs = "\n".join(f"--- {p.args[-8:]}\n{p.log_tail(3000)}" for p in procs)
    raise AssertionError(f"{what}: not reached within {within}s: {counts}\n{logs}")
