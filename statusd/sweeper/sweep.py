"""One sweep: find stale workloads from Redis, drop the ones that are done, lease and chunk the rest.

Candidates come from the two liveness sorted sets (statusd.liveness), never from a SQL table scan,
read with the cutoffs of statusd.staleness (the one rule of who is silent too long):
- `last_seen` older than the silence allowed (no heartbeat and no good poll for that long);
- `pending_since` older than STATUSD_START_TIMEOUT (registered, never heard from).
Their rows are then loaded in bulk (WHERE id IN (...), chunked) only to drop final and deregistered
workloads (which also leave the sorted sets, so they cost nothing next time). Everything else is
leased (statusd.sweeper.poll_leases) and cut into chunks of STATUSD_POLL_CHUNK, one `poll` task each,
so any number of workers share the network I/O; the leased ids are also queued, so a task whose
chunk is down to its stragglers fills its free slots from later chunks. There is no per-sweep cap: every stale workload
is enqueued every interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd import dependencies, liveness, maintenance, selfwatch
from statusd.celery.budgets import budgets
from statusd.db import reading
from statusd.hearing import read_hearing
from statusd.keys import Keys
from statusd.lifecycle import FINAL_STATES, Kind, State
from statusd.recovery import ensure_liveness
from statusd.runtime import Runtime
from statusd.staleness import Cutoffs, Facts, Judge
from statusd.sweeper import disruption, poll_leases
from statusd.tables import WORKLOADS

SQL_IN_CHUNK = 500  # ids per WHERE id IN (...): well under SQLite's bound-parameter limit


@dataclass(frozen=True, slots=True)
class PullFacts:
    """What the pull path needs to know about one workload."""

    id: str
    kind: Kind
    state: State
    status_url: str | None
    poll_failures: int
    state_changed_at: datetime
    deleted: bool
    last_poll_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.deleted or self.state in FINAL_STATES


@dataclass
class SweepResult:
    skipped: bool = False  # another sweep held the lock
    stale: int = 0  # silent workloads found (statusd.staleness), done ones included
    dropped: int = 0  # final, deregistered or unknown: removed from the liveness sets
    busy: int = 0  # leased by an earlier sweep whose poll is still queued or running
    chunks: list[list[str]] = field(default_factory=list)
    token: str = ""
    duration_s: float = 0.0

    @property
    def enqueued(self) -> int:
        return sum(len(c) for c in self.chunks)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A workload the range queries found silent: its id and its score there."""

    id: str
    last_seen: float | None  # None: never heard from (found in `pending_since`)
    registered_at: float | None  # its `pending_since` score, when found there


async def stale_candidates(redis: Redis, keys: Keys, judge: Judge) -> list[Candidate]:
    """Workloads silent past the judge's cutoffs (seen ones, then never-seen ones), read shard by
    shard (statusd.liveness). Oldest first, so a backlog is worked off in order."""
    cut = judge.cutoffs()
    exclusive = Cutoffs.exclusive
    seen = await liveness.at_most(redis, keys, keys.last_seen, exclusive(cut.last_seen_before))
    stale = [Candidate(wid, score, None) for wid, score in seen]
    seen_stale = {c.id for c in stale}
    pending = [
        (wid, score)
        for wid, score in await liveness.at_most(
            redis, keys, keys.pending_since, exclusive(cut.pending_before)
        )
        if wid not in seen_stale
    ]
    if pending:
        # A workload still in `pending_since` may have heartbeated since (ingest records it in
        # `last_seen`); it is judged by that sign of life, which is recent (it was not found
        # above), so it leaves `pending_since` and is no candidate.
        scores = await liveness.scores(redis, keys, keys.last_seen, [wid for wid, _ in pending])
        fresh = [wid for (wid, _), s in zip(pending, scores, strict=True) if s is not None]
        await liveness.drop(redis, keys, keys.pending_since, fresh)
        pending = [p for p, s in zip(pending, scores, strict=True) if s is None]
    return stale + [Candidate(wid, None, score) for wid, score in pending]


async def load_rows(engine: AsyncEngine, ids: Sequence[str]) -> dict[str, PullFacts]:
    """Rows of these workloads by id, in bulk (chunked IN lists); unknown ids are absent."""
    out: dict[str, PullFacts] = {}
    cols = (
        WORKLOADS.c.id,
        WORKLOADS.c.kind,
        WORKLOADS.c.state,
        WORKLOADS.c.status_url,
        WORKLOADS.c.poll_failures,
        WORKLOADS.c.state_changed_at,
        WORKLOADS.c.deleted_at,
        WORKLOADS.c.last_poll_at,
        WORKLOADS.c.labels,
    )
    async with reading(engine) as conn:
        for start in range(0, len(ids), SQL_IN_CHUNK):
            part = ids[start : start + SQL_IN_CHUNK]
            result = await conn.execute(select(*cols).where(WORKLOADS.c.id.in_(part)))
            for r in result:
                out[r.id] = PullFacts(
                    id=r.id,
                    kind=Kind(r.kind),
                    state=State(r.state),
                    status_url=r.status_url,
                    poll_failures=int(r.poll_failures or 0),
                    state_changed_at=r.state_changed_at,
                    deleted=r.deleted_at is not None,
                    last_poll_at=r.last_poll_at,
                    labels=dict(r.labels or {}),
                )
    return out


def due(
    judge: Judge, candidate: Candidate, row: PullFacts, excuses: maintenance.Excuses | None = None
) -> bool:
    """The per-workload answer for a candidate of the range queries (statusd.staleness): the
    queries know no maintenance window, this answer does (a quiet period the workload announced
    is already in its `last_seen` score: ingest moved its deadline)."""
    registered = candidate.registered_at
    facts = Facts(
        row.state,
        candidate.last_seen,
        registered if registered is not None else row.state_changed_at.timestamp(),
        quiet_until=excuses.until(row.id, row.kind, row.labels) if excuses else None,
    )
    return judge.silent(facts) is not None


async def forget_done(redis: Redis, keys: Keys, ids: Sequence[str]) -> None:
    """Final or deregistered: nothing will ever be learned by polling them again."""
    await liveness.drop(redis, keys, keys.last_seen, ids)
    await liveness.drop(redis, keys, keys.pending_since, ids)


async def sweep(
    redis: Redis,
    engine: AsyncEngine,
    keys: Keys,
    *,
    judge: Judge,
    poll_chunk: int,
    lease_ms: int,
    lock_ms: int,
    token: str,
    excuses: maintenance.Excuses | None = None,
) -> SweepResult:
    """Find stale workloads and lease them for polling, in chunks. Does not enqueue (the task does).

    `excuses`: the maintenance windows evaluated once for this sweep; a candidate inside one (or
    within a full allowance after its end) is neither polled nor counted stale."""
    started = time.monotonic()
    result = SweepResult(token=token)
    lock = await poll_leases.take_sweep_lock(redis, keys, token, lock_ms)
    if lock is None:
        result.skipped = True
        return result
    try:
        candidates = await stale_candidates(redis, keys, judge)
        ids = [c.id for c in candidates]
        rows = await load_rows(engine, ids) if ids else {}
        done = [wid for wid in ids if wid not in rows or rows[wid].done]
        await forget_done(redis, keys, done)
        result.dropped = len(done)
        live = [
            c.id
            for c in candidates
            if c.id in rows and not rows[c.id].done and due(judge, c, rows[c.id], excuses)
        ]
        result.stale = len(done) + len(live)
        taken = await poll_leases.take(redis, keys, live, token, lease_ms)
        result.busy = len(live) - len(taken)
        result.chunks = [taken[i : i + poll_chunk] for i in range(0, len(taken), poll_chunk)]
        if len(result.chunks) > 1:
            # Listed once more for tasks with free slots: a task waiting on its chunk's hanging
            # endpoints takes queued ids of later chunks instead of idling (statusd.sweeper.poll_leases).
            await poll_leases.queue(redis, keys, taken, token, lease_ms)
    finally:
        await lock.release()
    result.duration_s = time.monotonic() - started
    return result


async def run_sweep(rt: Runtime, token: str) -> SweepResult:
    """`sweep` with every knob taken from the runtime's settings."""
    settings = rt.settings
    b = budgets(settings)
    # Below Celery's soft limit: the sweep unwinds here (lock released) rather than being
    # interrupted by a signal at an arbitrary point.
    async with asyncio.timeout(b.sweep_deadline_s):
        await ensure_liveness(rt)  # Redis lost its data: rebuild the view before reading it
        hearing = await read_hearing(rt.redis, rt.keys)
        now = time.time()
        windows = await maintenance.list_all(rt.engine)
        result = await sweep(
            rt.redis,
            rt.engine,
            rt.keys,
            judge=Judge.of(settings, hearing, now),
            excuses=maintenance.Excuses.of(windows, datetime.fromtimestamp(now, UTC)),
            poll_chunk=settings.poll_chunk,
            lease_ms=b.lease_ms,
            lock_ms=b.sweep_lock_ms,
            token=token,
        )
        if not result.skipped:
            # Judged before the polls are enqueued, so they already see a disruption this sweep
            # found (statusd.sweeper.disruption); stale = the candidates still tracked.
            await disruption.judge(rt, result.stale - result.dropped)
            if rt.ledger.alert_webhooks and rt.ledger.parents is not None:
                # Holds whose parent proved alive without a recovery (statusd.dependencies).
                await dependencies.release_idle(
                    rt.engine, rt.ledger.parents, rt.ledger.alert_webhooks
                )
    if not result.skipped:
        await selfwatch.record_sweep_success(rt.redis, rt.keys, time.time())
    return result
