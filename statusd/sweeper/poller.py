"""Polling containers' status endpoints, and what a poll's answer does to a workload.

The container status contract (README, "the status endpoint"): `GET status_url` -> 200 with a
JSON object `{"status": STATE, "seq": int}`. Anything else is a failed poll: timeout, refused,
reset, non-200 (redirects are not followed), a body over STATUSD_POLL_MAX_BYTES, or a body that is
not that object. A hanging or garbage-spewing container costs one request slot for at most
STATUSD_POLL_TIMEOUT and never blocks the others (bounded concurrency, total timeout per request).

Outcomes, per workload of one `poll` task:
- good answer: a sign of life in Redis (liveness.mark_seen) and an Observation with source `pull`
  through apply_observation, so a training stuck in RUNNING whose endpoint says SUCCEEDED becomes
  SUCCEEDED; poll_failures back to 0;
- failure: poll_failures + 1 (bookkeeping columns only, never `state`), or 1 when the workload
  was seen (a heartbeat, in Redis `last_seen`) after its last poll: heartbeats never reach the
  database, so that is where a new stale spell starts counting afresh. At
  STATUSD_UNREACHABLE_AFTER failed polls with no sign of life in between, UNREACHABLE (source
  `sweeper`, reason = the last error);
  UNREACHABLE for STATUSD_LOST_AFTER seconds, LOST. No status_url at all: UNREACHABLE at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import orjson
import structlog
from sqlalchemy import bindparam, update

from statusd import liveness
from statusd.db import transaction
from statusd.errors import StatusdError, UnknownWorkload, UnsafeStatusURL
from statusd.hearing import read_hearing
from statusd.lifecycle import CONTACT_STATES, Kind, Source, State, reportable_states
from statusd.metrics import POLLS
from statusd.models import Workload, utcnow
from statusd.runtime import Runtime
from statusd.schema.rules import SEQ_LIMIT
from statusd.selfwatch import read_disruption
from statusd.settings import Settings
from statusd.sweeper import leases
from statusd.sweeper.budgets import budgets
from statusd.sweeper.sweep import WorkloadRow, load_rows
from statusd.sweeper.url_policy import AllowListResolver, Network, check_syntax
from statusd.transitions import Observation, apply_observation

log = structlog.get_logger("statusd.sweeper")
_W = Workload.__table__  # type: ignore[attr-defined]
MAX_ERROR_CHARS = 500
USER_AGENT = "statusd-poller/1"


@dataclass(frozen=True, slots=True)
class PollAnswer:
    """What one GET status_url produced: a (status, seq) or an error with its outcome label."""

    outcome: str  # ok | timeout | refused | reset | http_status | redirect | too_large | garbage | blocked | no_url | error
    status: State | None = None
    seq: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def parse_status(body: bytes, kind: Kind) -> tuple[State, int]:
    """Parse a status body strictly: a JSON object with a state of this kind and an integer seq.

    Extra fields are ignored (room for container-side detail); raises ValueError naming the problem."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"body is a JSON {type(doc).__name__}, not an object")
    status, seq = doc.get("status"), doc.get("seq")
    if not isinstance(status, str):
        raise ValueError('"status" is missing or not a string')
    try:
        state = State(status)
    except ValueError as exc:
        raise ValueError(f'"status" {status[:40]!r} is not a state') from exc
    if state not in reportable_states(kind):
        raise ValueError(f'"status" {state} is not a state a {kind} can report')
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < SEQ_LIMIT:
        raise ValueError('"seq" is missing or not an integer 0 <= seq < 2**63 (a BIGINT)')
    return state, seq


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it exceeds `limit` bytes (we stop reading there)."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None


async def poll_one(
    session: aiohttp.ClientSession,
    url: str,
    kind: Kind,
    *,
    allow: Sequence[Network],
    timeout_s: float,
    max_bytes: int,
) -> PollAnswer:
    """GET one status_url under the contract; never raises for anything the container does."""
    try:
        check_syntax(url, allow)
        async with session.get(
            url,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
        ) as resp:
            if 300 <= resp.status < 400:
                return PollAnswer("redirect", error=f"HTTP {resp.status} redirect (not followed)")
            if resp.status != 200:
                return PollAnswer("http_status", error=f"HTTP {resp.status}")
            body = await _read_capped(resp, max_bytes)
            if body is None:
                return PollAnswer("too_large", error=f"body larger than {max_bytes} bytes")
    except UnsafeStatusURL as exc:
        return PollAnswer("blocked", error=str(exc))
    except TimeoutError:
        return PollAnswer("timeout", error=f"no answer within {timeout_s:g}s")
    except aiohttp.ClientConnectorError as exc:
        return PollAnswer("refused", error=f"cannot connect: {exc.os_error or exc}")
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError) as exc:
        return PollAnswer("reset", error=f"connection dropped: {type(exc).__name__}: {exc}")
    except aiohttp.ClientResponseError as exc:  # malformed HTTP
        return PollAnswer("garbage", error=f"bad HTTP response: {exc.message}")
    except aiohttp.ClientError as exc:
        return PollAnswer("error", error=f"{type(exc).__name__}: {exc}")
    try:
        status, seq = parse_status(body, kind)
    except ValueError as exc:
        return PollAnswer("garbage", error=f"bad status body: {exc}")
    return PollAnswer("ok", status=status, seq=seq)


def poll_session(allow: Sequence[Network], limit: int) -> aiohttp.ClientSession:
    """The poller's HTTP client: host names checked against the allow-list on every resolution.

    No DNS cache (a rebinding name is re-checked every time), never a proxy from the
    environment (trust_env=False), at most `limit` connections."""
    connector = aiohttp.TCPConnector(
        limit=limit, resolver=AllowListResolver(allow), use_dns_cache=False
    )
    return aiohttp.ClientSession(connector=connector, trust_env=False)


@dataclass
class PollReport:
    leased: int = 0  # workloads this task held the lease of
    polled: int = 0
    ok: int = 0
    failed: int = 0
    applied: int = 0  # state changes made (pull observations and sweeper verdicts)
    held_back: int = 0  # UNREACHABLE/LOST verdicts not applied: disruption mode


def contact_verdict(
    row: WorkloadRow, failures: int, now: datetime, settings: Settings
) -> State | None:
    """After a failed poll: UNREACHABLE, LOST, or nothing yet (the lifecycle judges it again)."""
    if row.state is State.UNREACHABLE:
        since = (now - row.state_changed_at).total_seconds()
        return State.LOST if since >= settings.lost_after else None
    if row.state in CONTACT_STATES:
        return None
    if row.status_url is None or failures >= settings.unreachable_after:
        return State.UNREACHABLE
    return None


async def _poll_all(rows: Sequence[WorkloadRow], settings: Settings) -> dict[str, PollAnswer]:
    allow = settings.allow_networks
    sem = asyncio.Semaphore(settings.poll_concurrency)

    async def one(session: aiohttp.ClientSession, row: WorkloadRow) -> tuple[str, PollAnswer]:
        if not row.status_url:
            return row.id, PollAnswer("no_url", error="no status_url registered")
        async with sem:
            answer = await poll_one(
                session,
                row.status_url,
                row.kind,
                allow=allow,
                timeout_s=settings.poll_timeout,
                max_bytes=settings.poll_max_bytes,
            )
        return row.id, answer

    async with poll_session(allow, settings.poll_concurrency) as session:
        return dict(await asyncio.gather(*(one(session, r) for r in rows)))


async def _seen_since_last_poll(rt: Runtime, rows: Sequence[WorkloadRow]) -> set[str]:
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


async def _record_bookkeeping(
    rt: Runtime,
    rows: dict[str, WorkloadRow],
    answers: dict[str, PollAnswer],
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
        stmt = (
            update(_W)
            .where(_W.c.id == bindparam("b_id"))
            .values(
                poll_failures=bindparam("b_failures"),
                last_poll_error=bindparam("b_error"),
                last_poll_at=bindparam("b_at"),
            )
        )
        async with transaction(rt.engine) as conn:
            await conn.execute(stmt, params)
    return failures


async def _apply(rt: Runtime, obs: Observation) -> bool:
    try:
        result = await apply_observation(rt.ledger, obs)
    except UnknownWorkload:
        return False  # deregistered while we polled: nothing to do
    return result.transition is not None


async def run_poll(rt: Runtime, ids: Sequence[str], token: str) -> PollReport:
    """Poll the workloads whose lease `token` holds, apply what was learned, release the leases."""
    settings = rt.settings
    b = budgets(settings)
    report = PollReport()
    started = time.monotonic()
    held = await leases.confirm(rt.redis, rt.keys, list(ids), token, b.lease_ms)
    report.leased = len(held)
    try:
        async with asyncio.timeout(b.poll_deadline_s):
            await _poll_held(rt, held, report)
    finally:
        # Keep each lease as a cool-down until one sweep interval after this poll started.
        keep_ms = b.hold_ms - int((time.monotonic() - started) * 1000)
        await leases.release(rt.redis, rt.keys, held, token, keep_ms)
    return report


async def _poll_held(rt: Runtime, held: Sequence[str], report: PollReport) -> None:
    settings = rt.settings
    rows = {wid: r for wid, r in (await load_rows(rt.engine, held)).items() if not r.done}
    answers = await _poll_all(list(rows.values()), settings)
    now_wall, now = time.time(), utcnow()
    report.polled = len(answers)
    for a in answers.values():
        POLLS.labels(outcome=a.outcome).inc()
    good = {wid: a for wid, a in answers.items() if a.ok}
    report.ok, report.failed = len(good), len(answers) - len(good)

    # Liveness first: even an observation the lifecycle ignores (stale seq) proves life.
    await liveness.mark_seen(rt.redis, rt.keys, {wid: (now_wall, a.seq) for wid, a in good.items()})
    # While ingest is (or just was) down, a failed poll is no evidence: it neither counts toward
    # UNREACHABLE nor moves anyone (statusd.hearing); good answers above are applied all the same.
    hearing = await read_hearing(rt.redis, rt.keys)
    counts = liveness.silence_counts(now_wall, hearing.deaf_until(settings, now_wall))
    failures = await _record_bookkeeping(rt, rows, answers, now, counted=counts)
    # Disruption mode (statusd.sweeper.disruption): most of the fleet is silent at once, more
    # likely our fault or the network's. Good answers still apply; failures convict nobody.
    suspect_ourselves = (await read_disruption(rt.redis, rt.keys)).active

    for wid, a in answers.items():
        row = rows[wid]
        try:
            if a.ok and a.status is not None:
                obs = Observation(
                    wid, a.status, Source.PULL, seq=a.seq, actor="poller", observed_at=now
                )
                report.applied += await _apply(rt, obs)
                continue
            verdict = contact_verdict(row, failures[wid], now, settings) if counts else None
            if verdict is not None and suspect_ourselves:
                report.held_back += 1
            elif verdict is not None:
                reason = a.error or a.outcome
                if verdict is State.LOST:
                    reason = f"unreachable for {settings.lost_after:g}s; last error: {reason}"
                obs = Observation(
                    wid, verdict, Source.SWEEPER, reason=reason, actor="sweeper", observed_at=now
                )
                report.applied += await _apply(rt, obs)
        except StatusdError as exc:
            # One workload's storage trouble must not stop the rest of the chunk; the next sweep
            # finds it stale again and retries.
            log.warning("poll.apply_failed", workload_id=wid, error=str(exc))
