"""Polling containers' status endpoints, and what a poll's answer does to a workload.

The container status contract (README, "the status endpoint"): `GET status_url` -> 200 with a
JSON object `{"status": STATE, "seq": int}`. Anything else is a failed poll: timeout, refused,
reset, non-200 (redirects are not followed), a body over STATUSD_POLL_MAX_BYTES, or a body that is
not that object. A hanging or garbage-spewing container costs one request slot for at most
STATUSD_POLL_TIMEOUT and never blocks the others (bounded concurrency, total timeout per request).

A `poll` task streams: each answer joins the next batch as soon as it arrives, and each batch
is applied at once (statusd.sweeper.answers), so one hanging endpoint holds back only itself.
Nor does it hold the worker process's slots: a slot its chunk no longer needs takes a queued poll
of a later chunk of the same sweep (statusd.sweeper.poll_leases.take_queued), so a process whose chunk
is down to its stragglers keeps polling until they end, instead of idling while they hang.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson
import structlog

from statusd.celery.budgets import budgets
from statusd.errors import UnsafeStatusURL
from statusd.lifecycle import Kind, State, reportable_states
from statusd.runtime import Runtime
from statusd.schema.rules import SEQ_LIMIT
from statusd.settings import Settings
from statusd.sweeper import poll_leases
from statusd.sweeper.answers import PollAnswer, PollOutcome, PollReport, apply_answers
from statusd.sweeper.sweep import PullFacts, load_rows
from statusd.sweeper.url_policy import AllowListResolver, Network, check_syntax

log = structlog.get_logger("statusd.sweeper")
__all__ = [
    "PollAnswer",
    "PollOutcome",
    "PollReport",
    "parse_status",
    "poll_one",
    "poll_session",
    "run_poll",
]
USER_AGENT = "statusd-poller/1"


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
                return PollAnswer(
                    PollOutcome.REDIRECT, error=f"HTTP {resp.status} redirect (not followed)"
                )
            if resp.status != 200:
                return PollAnswer(PollOutcome.HTTP_STATUS, error=f"HTTP {resp.status}")
            body = await _read_capped(resp, max_bytes)
            if body is None:
                return PollAnswer(
                    PollOutcome.TOO_LARGE, error=f"body larger than {max_bytes} bytes"
                )
    except UnsafeStatusURL as exc:
        return PollAnswer(PollOutcome.BLOCKED, error=str(exc))
    except TimeoutError:
        return PollAnswer(PollOutcome.TIMEOUT, error=f"no answer within {timeout_s:g}s")
    except aiohttp.ClientConnectorError as exc:
        return PollAnswer(PollOutcome.REFUSED, error=f"cannot connect: {exc.os_error or exc}")
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError) as exc:
        return PollAnswer(
            PollOutcome.RESET, error=f"connection dropped: {type(exc).__name__}: {exc}"
        )
    except aiohttp.ClientResponseError as exc:  # malformed HTTP
        return PollAnswer(PollOutcome.GARBAGE, error=f"bad HTTP response: {exc.message}")
    except aiohttp.ClientError as exc:
        return PollAnswer(PollOutcome.ERROR, error=f"{type(exc).__name__}: {exc}")
    try:
        status, seq = parse_status(body, kind)
    except ValueError as exc:
        return PollAnswer(PollOutcome.GARBAGE, error=f"bad status body: {exc}")
    return PollAnswer(PollOutcome.OK, status=status, seq=seq)


def poll_session(allow: Sequence[Network], limit: int) -> aiohttp.ClientSession:
    """The poller's HTTP client: host names checked against the allow-list on every resolution.

    No DNS cache (a rebinding name is re-checked every time), never a proxy from the
    environment (trust_env=False), at most `limit` connections."""
    connector = aiohttp.TCPConnector(
        limit=limit, resolver=AllowListResolver(allow), use_dns_cache=False
    )
    return aiohttp.ClientSession(connector=connector, trust_env=False)


class _Polls:
    """A task's polls in flight under one concurrency budget: its own chunk first, then the
    queued polls it takes into the slots its stragglers leave free. Each answer goes on `arrived`
    as it comes in."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        arrived: asyncio.Queue[tuple[str, PollAnswer]],
    ) -> None:
        self._session, self._settings, self.arrived = session, settings, arrived
        self._sem = asyncio.Semaphore(settings.poll_concurrency)
        self.running: set[asyncio.Task[None]] = set()

    @property
    def free(self) -> int:
        """Slots no poll holds or waits for: taken polls would start at once."""
        return self._settings.poll_concurrency - len(self.running)

    def start(self, rows: Iterable[PullFacts]) -> None:
        for row in rows:
            task = asyncio.create_task(self._one(row))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _one(self, row: PullFacts) -> None:
        if not row.status_url:
            self.arrived.put_nowait(
                (row.id, PollAnswer(PollOutcome.NO_URL, error="no status_url registered"))
            )
            return
        async with self._sem:
            answer = await poll_one(
                self._session,
                row.status_url,
                row.kind,
                allow=self._settings.allow_networks,
                timeout_s=self._settings.poll_timeout,
                max_bytes=self._settings.poll_max_bytes,
            )
        self.arrived.put_nowait((row.id, answer))

    async def next_batch(self) -> dict[str, PollAnswer]:
        """Everything that arrived, waiting for one answer if none has; surfaces a bug in a poll."""
        while self.arrived.empty():
            getting = asyncio.ensure_future(self.arrived.get())
            done, _ = await asyncio.wait(
                {getting, *self.running}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done - {getting}:
                task.result()  # poll_one never raises for what a container does: this is a bug
            if getting.done():
                self.arrived.put_nowait(getting.result())
            else:
                getting.cancel()
        batch: dict[str, PollAnswer] = {}
        while not self.arrived.empty():
            wid, answer = self.arrived.get_nowait()
            batch[wid] = answer
        return batch

    async def cancel(self) -> None:
        for task in self.running:
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)


@dataclass
class _PollRun:
    """One run of a poll task: its tokens, its window for taking queued polls, what it holds."""

    rt: Runtime
    token: str  # the sweep's
    run: str  # poll_leases.run_token: what this run's leases hold
    take_until: float  # monotonic; no queued poll is taken after this
    report: PollReport
    started_at: dict[str, float] = field(default_factory=dict)  # id -> when its poll began
    queue_empty: bool = False

    async def take(self, count: int) -> dict[str, PullFacts]:
        """Up to `count` queued polls of the sweep that no task has started (rows to poll)."""
        if count <= 0 or self.queue_empty or time.monotonic() >= self.take_until:
            return {}
        b = budgets(self.rt.settings)
        ids, self.queue_empty = await poll_leases.take_queued(
            self.rt.redis, self.rt.keys, self.token, self.run, count, b.lease_ms
        )
        now = time.monotonic()
        self.started_at.update(dict.fromkeys(ids, now))
        self.report.taken += len(ids)
        rows = await load_rows(self.rt.engine, ids) if ids else {}
        return {wid: r for wid, r in rows.items() if not r.done}


async def run_poll(
    rt: Runtime, ids: Sequence[str], token: str, run_id: str | None = None
) -> PollReport:
    """Poll the workloads whose lease `token` holds, apply what was learned, release the poll_leases.

    `run_id` names this run (the Celery task id: a redelivery keeps it and so redoes what a killed
    run held); while slots are free the run also takes queued polls of the same sweep."""
    settings = rt.settings
    b = budgets(settings)
    report = PollReport()
    started = time.monotonic()
    run = _PollRun(
        rt,
        token,
        poll_leases.run_token(token, run_id or uuid.uuid4().hex),
        started + b.take_window_s,
        report,
    )
    held = await poll_leases.confirm(rt.redis, rt.keys, list(ids), token, b.lease_ms, run.run)
    report.leased = len(held)
    run.started_at.update(dict.fromkeys(held, started))
    backoff: dict[str, float] = {}
    # Every lease the run holds (its own and those it takes) stays alive while it polls; cut off,
    # they expire within one short TTL.
    renewal = poll_leases.LeaseRenewal(
        rt.redis, rt.keys, run.started_at.keys(), run.run, b.lease_ms
    )
    try:
        async with asyncio.timeout(b.poll_deadline_s):
            await _poll_held(run, held, backoff)
    finally:
        await renewal.stop()
        # Keep each lease as a cool-down until one sweep interval after its poll started; a
        # workload left UNREACHABLE keeps it until its back-off ends (statusd.sweeper.answers).
        now = time.monotonic()
        keep_ms = {wid: b.hold_ms - int((now - t) * 1000) for wid, t in run.started_at.items()}
        keep_ms.update(
            {wid: max(keep_ms[wid], int(s * 1000)) for wid, s in backoff.items() if wid in keep_ms}
        )
        await poll_leases.release_each(rt.redis, rt.keys, keep_ms, run.run)
        await poll_leases.forget_taken(rt.redis, rt.keys, run.run)
    return report


async def _poll_held(run: _PollRun, held: Sequence[str], backoff: dict[str, float]) -> None:
    rt = run.rt
    rows = {wid: r for wid, r in (await load_rows(rt.engine, held)).items() if not r.done}
    arrived: asyncio.Queue[tuple[str, PollAnswer]] = asyncio.Queue()
    async with poll_session(rt.settings.allow_networks, rt.settings.poll_concurrency) as session:
        polls = _Polls(session, rt.settings, arrived)
        polls.start(rows.values())
        try:
            taken = await run.take(polls.free)
            rows.update(taken)
            polls.start(taken.values())
            while polls.running or not arrived.empty():
                batch = await polls.next_batch()
                # Slots the batch freed start their next polls before the batch is applied.
                taken = await run.take(polls.free)
                rows.update(taken)
                polls.start(taken.values())
                backoff.update(await apply_answers(rt, rows, batch, run.report))
        finally:
            await polls.cancel()
