"""Polling containers' status endpoints, and what a poll's answer does to a workload.

The container status contract (README, "the status endpoint"): `GET status_url` -> 200 with a
JSON object `{"status": STATE, "seq": int}`. Anything else is a failed poll: timeout, refused,
reset, non-200 (redirects are not followed), a body over STATUSD_POLL_MAX_BYTES, or a body that is
not that object. A hanging or garbage-spewing container costs one request slot for at most
STATUSD_POLL_TIMEOUT and never blocks the others (bounded concurrency, total timeout per request).

A `poll` task streams: each answer joins the next batch as soon as it arrives, and each batch
is applied at once (statusd.sweeper.answers), so one hanging endpoint holds back only itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import aiohttp
import orjson
import structlog

from statusd.errors import UnsafeStatusURL
from statusd.lifecycle import Kind, State, reportable_states
from statusd.runtime import Runtime
from statusd.schema.rules import SEQ_LIMIT
from statusd.settings import Settings
from statusd.sweeper import leases
from statusd.sweeper.answers import PollAnswer, PollOutcome, PollReport, apply_answers
from statusd.sweeper.budgets import budgets
from statusd.sweeper.sweep import WorkloadRow, load_rows
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


async def _poll_stream(
    rows: Sequence[WorkloadRow], settings: Settings, arrived: asyncio.Queue[tuple[str, PollAnswer]]
) -> None:
    """Poll every row (bounded concurrency), putting each answer on `arrived` as it comes in."""
    allow = settings.allow_networks
    sem = asyncio.Semaphore(settings.poll_concurrency)

    async def one(session: aiohttp.ClientSession, row: WorkloadRow) -> None:
        if not row.status_url:
            arrived.put_nowait(
                (row.id, PollAnswer(PollOutcome.NO_URL, error="no status_url registered"))
            )
            return
        async with sem:
            answer = await poll_one(
                session,
                row.status_url,
                row.kind,
                allow=allow,
                timeout_s=settings.poll_timeout,
                max_bytes=settings.poll_max_bytes,
            )
        arrived.put_nowait((row.id, answer))

    async with poll_session(allow, settings.poll_concurrency) as session:
        await asyncio.gather(*(one(session, r) for r in rows))


async def run_poll(rt: Runtime, ids: Sequence[str], token: str) -> PollReport:
    """Poll the workloads whose lease `token` holds, apply what was learned, release the leases."""
    settings = rt.settings
    b = budgets(settings)
    report = PollReport()
    started = time.monotonic()
    held = await leases.confirm(rt.redis, rt.keys, list(ids), token, b.lease_ms)
    report.leased = len(held)
    backoff: dict[str, float] = {}
    try:
        async with asyncio.timeout(b.poll_deadline_s):
            await _poll_held(rt, held, report, backoff)
    finally:
        # Keep each lease as a cool-down until one sweep interval after this poll started; a
        # workload left UNREACHABLE keeps it until its back-off ends (statusd.sweeper.answers).
        elapsed_ms = int((time.monotonic() - started) * 1000)
        keep_ms = {wid: b.hold_ms - elapsed_ms for wid in held}
        keep_ms.update(
            {wid: max(keep_ms[wid], int(s * 1000)) for wid, s in backoff.items() if wid in keep_ms}
        )
        await leases.release_each(rt.redis, rt.keys, keep_ms, token)
    return report


async def _poll_held(
    rt: Runtime, held: Sequence[str], report: PollReport, backoff: dict[str, float]
) -> None:
    rows = {wid: r for wid, r in (await load_rows(rt.engine, held)).items() if not r.done}
    arrived: asyncio.Queue[tuple[str, PollAnswer]] = asyncio.Queue()
    polling = asyncio.create_task(_poll_stream(list(rows.values()), rt.settings, arrived))
    try:
        while not (polling.done() and arrived.empty()):
            getting = asyncio.ensure_future(arrived.get())
            await asyncio.wait({getting, polling}, return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                continue
            batch = dict([getting.result()])
            while not arrived.empty():  # everything that arrived while the last batch applied
                wid, answer = arrived.get_nowait()
                batch[wid] = answer
            backoff.update(await apply_answers(rt, rows, batch, report))
        await polling  # surfaces a bug in the polling itself
    finally:
        if not polling.done():
            polling.cancel()
            await asyncio.gather(polling, return_exceptions=True)
