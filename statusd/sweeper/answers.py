"""What a poll's answers do to workloads, applied batch by batch as the answers arrive.

A `poll` task hands over whatever answers have arrived since the last batch (statusd.sweeper
.poller), so a verdict is applied as soon as its own answer (or timeout) is in, not when the
slowest endpoint of the chunk has answered. Per batch:
- good answers: a sign of life in Redis (liveness.mark_seen) and an Observation with source `pull`;
  poll_failures back to 0;
- failures: poll_failures + 1 (bookkeeping columns only, never `state`), or 1 when the workload
  was seen (Redis `last_seen`) after its last poll; at STATUSD_UNREACHABLE_AFTER failed polls,
  UNREACHABLE (source `sweeper`, reason = the last error); UNREACHABLE for STATUSD_LOST_AFTER
  seconds, LOST. No status_url at all: UNREACHABLE at once.
- the batch's observations and verdicts are written in one transaction (apply_observations:
  rows locked in id order, a poison observation fails alone).
- while ingest is (or just was) down, failures count for nothing (statusd.hearing); in disruption
  mode, UNREACHABLE/LOST verdicts are held back (statusd.sweeper.disruption). Both are read per
  batch, so a batch sees the newest judgement.
Back-off: a workload left UNREACHABLE by a failed poll is not polled again every sweep (a hanging
endpoint would take a slot each time); its next poll is `unreachable_repoll_s` away, but never
later than the moment it becomes due for LOST, so LOST is not delayed. The verdicts and the
back-off are statusd.staleness's rules; this module applies them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import structlog
from sqlalchemy import bindparam, update

from statusd import liveness, maintenance
from statusd.db import transaction
from statusd.errors import StatusdError, UnknownWorkload
from statusd.hearing import read_hearing
from statusd.lifecycle import Source, State
from statusd.metrics import POLLS
from statusd.models import utcnow
from statusd.runtime import Runtime
from statusd.selfwatch import read_disruption
from statusd.settings import Settings
from statusd.staleness import Judge, contact_verdict, repoll_after
from statusd.sweeper.sweep import PullFacts
from statusd.tables import WORKLOADS
from statusd.transitions import Observation, Result, apply_observations

log = structlog.get_logger("statusd.sweeper")
MAX_ERROR_CHARS = 500


class PollOutcome(StrEnum):
    """How one poll ended (the `outcome` label of statusd_polls_total)."""

    OK = "ok"  # a valid status body: (status, seq)
    TIMEOUT = "timeout"  # no whole answer within STATUSD_POLL_TIMEOUT
    REFUSED = "refused"  # could not connect
    RESET = "reset"  # the connection dropped mid-answer
    HTTP_STATUS = "http_status"  # not 200 (and not a redirect)
    REDIRECT = "redirect"  # 3xx: never followed
    TOO_LARGE = "too_large"  # a body over STATUSD_POLL_MAX_BYTES
    GARBAGE = "garbage"  # malformed HTTP, or a body that is not the status object
    BLOCKED = "blocked"  # the URL or its address is not allowed (SSRF policy)
    NO_URL = "no_url"  # no status_url registered
    ERROR = "error"  # any other client-side failure


@dataclass(frozen=True, slots=True)
class PollAnswer:
    """What one GET status_url produced: a (status, seq) or an error with its outcome."""

    outcome: PollOutcome
    status: State | None = None
    seq: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is PollOutcome.OK


@dataclass
class PollReport:
    leased: int = 0  # workloads this task held the lease of
    polled: int = 0
    ok: int = 0
    failed: int = 0
    applied: int = 0  # state changes made (pull observations and sweeper verdicts)
    held_back: int = 0  # UNREACHABLE/LOST verdicts not applied: disruption mode
    backed_off: int = 0  # left UNREACHABLE: next poll later than the next sweep (up to LOST)
    taken: int = 0  # queued polls of later chunks this task took into its free slots


def _backoff(
    row: PullFacts, verdict: State | None, applied: bool, now: datetime, settings: Settings
) -> float | None:
    """Seconds until the next poll of a workload this failed poll leaves UNREACHABLE (None: the
    normal cadence; statusd.staleness.repoll_after)."""
    if verdict is State.UNREACHABLE and applied:
        return repoll_after(now, now, settings)
    if row.state is State.UNREACHABLE and verdict is None:
        return repoll_after(row.state_changed_at, now, settings)
    return None


async def _seen_since_last_poll(rt: Runtime, rows: Sequence[PullFacts]) -> set[str]:
    """Ids seen (Redis `last_seen`) after their last poll: their failure count starts over.

    Heartbeats only reach Redis, so a row's poll_failures may be left over from an earlier stale
    spell; a sign of life after that spell's last poll means the count no longer applies."""
    polled = [r for r in rows if r.last_poll_at is not None]
    if not polled:
        return set()
    scores = await liveness.scores(rt.redis, rt.keys, rt.keys.last_seen, [r.id for r in polled])
    return {
        r.id
        for r, score in zip(polled, scores, strict=True)
        if score is not None and r.last_poll_at is not None and score > r.last_poll_at.timestamp()
    }


_BOOKKEEPING = (
    update(WORKLOADS)
    .where(WORKLOADS.c.id == bindparam("b_id"))
    .values(
        poll_failures=bindparam("b_failures"),
        last_poll_error=bindparam("b_error"),
        last_poll_at=bindparam("b_at"),
    )
)


async def _record_bookkeeping(
    rt: Runtime,
    rows: Mapping[str, PullFacts],
    answers: Mapping[str, PollAnswer],
    at: datetime,
    *,
    counted: bool = True,
) -> dict[str, int]:
    """poll_failures / last_poll_error / last_poll_at in one executemany; returns new failure counts.
    Not `counted`: failures are recorded (error, time) but the count does not grow."""
    fresh = await _seen_since_last_poll(rt, [rows[wid] for wid, a in answers.items() if not a.ok])
    failures = {
        wid: 0 if a.ok else (0 if wid in fresh else rows[wid].poll_failures) + (1 if counted else 0)
        for wid, a in answers.items()
    }
    params = [
        {
            "b_id": wid,
            "b_failures": failures[wid],
            "b_error": None if a.ok else (a.error or a.outcome)[:MAX_ERROR_CHARS],
            "b_at": at,
        }
        for wid, a in answers.items()
    ]
    if params:
        async with transaction(rt.engine) as conn:
            await conn.execute(_BOOKKEEPING, params)
    return failures


async def _apply_one(rt: Runtime, obs: Observation) -> Result | Exception:
    try:
        (result,) = await apply_observations(rt.ledger, [obs])
    except StatusdError as exc:
        return exc
    return result


async def _apply_all(rt: Runtime, observations: Sequence[Observation]) -> dict[str, bool]:
    """Write a batch's observations in one transaction (statusd.transitions.apply_observations);
    returns per workload whether its state changed. A transient failure of the batch falls back
    to one transaction per observation, so one workload's storage trouble stops no other."""
    if not observations:
        return {}
    try:
        results = await apply_observations(rt.ledger, observations)
    except StatusdError as exc:
        log.warning("poll.batch_apply_failed", observations=len(observations), error=str(exc))
        results = [await _apply_one(rt, obs) for obs in observations]
    changed: dict[str, bool] = {}
    for obs, result in zip(observations, results, strict=True):
        if isinstance(result, Exception):
            if not isinstance(result, UnknownWorkload):  # unknown: deregistered while we polled
                # The next sweep finds it stale again and retries.
                log.warning("poll.apply_failed", workload_id=obs.workload_id, error=str(result))
            changed[obs.workload_id] = False
        else:
            changed[obs.workload_id] = result.transition is not None
    return changed


async def apply_answers(
    rt: Runtime,
    rows: Mapping[str, PullFacts],
    answers: Mapping[str, PollAnswer],
    report: PollReport,
) -> dict[str, float]:
    """Apply one batch of arrived answers; returns the back-off (seconds) of workloads left
    UNREACHABLE (see the module docstring)."""
    settings = rt.settings
    now_wall, now = time.time(), utcnow()
    report.polled += len(answers)
    for a in answers.values():
        POLLS.labels(outcome=a.outcome).inc()
    good = {wid: a for wid, a in answers.items() if a.ok}
    report.ok += len(good)
    report.failed += len(answers) - len(good)

    # Liveness first: even an observation the lifecycle ignores (stale seq) proves life.
    await liveness.mark_seen(rt.redis, rt.keys, {wid: (now_wall, a.seq) for wid, a in good.items()})
    # While ingest is (or just was) down, a failed poll is no evidence: it neither counts toward
    # UNREACHABLE nor moves anyone (statusd.hearing); good answers above are applied all the same.
    hearing = await read_hearing(rt.redis, rt.keys)
    counts = Judge.of(settings, hearing, now_wall).silence_counts
    # Inside a maintenance window a failed poll convicts nobody either (windows read only when
    # some poll failed, once per batch).
    excuses = (
        maintenance.Excuses.of(await maintenance.list_all(rt.engine), now)
        if counts and len(good) < len(answers)
        else None
    )
    failures = await _record_bookkeeping(rt, rows, answers, now, counted=counts)
    # Disruption mode (statusd.sweeper.disruption): most of the fleet is silent at once, more
    # likely our fault or the network's. Good answers still apply; failures convict nobody.
    suspect_ourselves = (await read_disruption(rt.redis, rt.keys)).active

    observations: list[Observation] = []
    verdicts: dict[str, State | None] = {}  # failed polls: what each one's failure decided
    for wid, a in answers.items():
        if a.ok and a.status is not None:
            observations.append(
                Observation(wid, a.status, Source.PULL, seq=a.seq, actor="poller", observed_at=now)
            )
            continue
        row = rows[wid]
        verdict = (
            contact_verdict(
                row.state,
                row.state_changed_at,
                has_status_url=row.status_url is not None,
                failures=failures[wid],
                now=now,
                settings=settings,
            )
            if counts and not (excuses and excuses.covers(wid, row.kind, row.labels))
            else None
        )
        verdicts[wid] = verdict
        if verdict is not None and suspect_ourselves:
            report.held_back += 1
        elif verdict is not None:
            reason = a.error or a.outcome
            if verdict is State.LOST:
                reason = f"unreachable for {settings.lost_after:g}s; last error: {reason}"
            observations.append(
                Observation(
                    wid, verdict, Source.SWEEPER, reason=reason, actor="sweeper", observed_at=now
                )
            )
    # The whole batch in one transaction: its verdicts land together, as soon as it arrived.
    changed = await _apply_all(rt, observations)
    report.applied += sum(changed.values())
    backoff: dict[str, float] = {}
    for wid, verdict in verdicts.items():
        after = _backoff(rows[wid], verdict, changed.get(wid, False), now, settings)
        if after is not None:
            backoff[wid] = after
    report.backed_off += len(backoff)
    return backoff
