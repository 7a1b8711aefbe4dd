"""Drain the transactional outbox: claim due rows, send them, record what the peer said.

Order: per (target, workload, destination) strictly in transition order. Only the OLDEST pending
row of a workload is eligible, so N+1 is never sent before N is synced or dead-lettered (a dead
row no longer blocks: it is not pending). Different workloads go out in parallel, bounded by
`sync_concurrency`.

Three loops share one run, and only two of them touch the database (statusd.sync.outbox):
- claim: a batch of up to the free send slots, one statement, leased and committed BEFORE any
  network call, so no DB transaction or row lock is held while a peer is slow;
- send: up to `sync_concurrency` rows in flight, each with its own in-run retries; no DB at all;
- record: results collected while the previous batch was being written, written together in one
  transaction (group commit), each row guarded by its lease.
So the DB work is per batch, not per row, and a run holds at most two pooled connections.
A lease outlives one row's whole send (retry budget + one timeout) plus a record, so a live worker
never has its row taken; a worker killed mid-send leaves a lease that expires, and the row is
re-sent with the same Idempotency-Key (the transition id): a duplicate the peer recognizes, never
a loss. A worker that lost its lease records nothing for that row.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import aiohttp
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from statusd.errors import StorageUnavailable
from statusd.metrics import ALERTS_SENT, SYNC_SENDS
from statusd.models import OutboxTarget, utcnow
from statusd.settings import Settings
from statusd.sync.delivery import Delivery, TransientDeliveryError, Verdict
from statusd.sync.main_api import MainApiClient
from statusd.sync.outbox import (
    ClaimedRow,
    Outbox,
    Outcome,
    Result,
    dead_values,
    deferred_values,
    delivered_values,
)
from statusd.sync.run_state import DrainReport, RunState
from statusd.sync.webhooks import WebhookClient

log = structlog.get_logger("statusd.sync")

RETRY_INITIAL_WAIT = 0.2  # seconds before the first in-run retry; doubles, with jitter
RETRY_MAX_WAIT = 5.0


def new_owner() -> str:
    """A lease owner id unique to one drain run: host, pid, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_seconds(settings: Settings) -> float:
    """The lease must outlive one row's sends: the retry budget, the last attempt, and slack."""
    return max(settings.sync_lease, row_send_bound(settings))


def row_send_bound(settings: Settings) -> float:
    """The longest one row's sends can take: the retry budget, the last attempt, and slack."""
    return settings.sync_budget + 2 * settings.sync_timeout + 2


def prefetch_window(settings: Settings) -> float:
    """How long a row may wait, claimed but not yet sent, and still finish inside its lease.

    Claiming the next batch while the current one is in flight keeps every send slot busy (a
    claim is a DB round trip a freed slot would otherwise wait for). A row that waited longer
    than this is given back instead of sent; with a lease no longer than one row's sends there
    is no room to claim ahead, and claims only fill free slots.
    """
    return lease_seconds(settings) - row_send_bound(settings)


def between_runs_backoff(total_attempts: int, per_run: int, cap: float) -> float:
    """Seconds until a later run retries a row this run gave up on: 2^runs, capped, jittered."""
    runs = max(1, total_attempts // max(1, per_run))
    return min(cap, 2.0 ** min(runs, 16)) * random.uniform(0.5, 1.0)


def active_targets(settings: Settings) -> tuple[OutboxTarget, ...]:
    """Alerts always drain; main-DB sync only with STATUSD_MAIN_API_URL (unset: rows stay pending)."""
    return (
        (OutboxTarget.ALERT, OutboxTarget.MAIN) if settings.main_api_url else (OutboxTarget.ALERT,)
    )


class Drainer:
    """One drain run: keeps up to `sync_concurrency` rows in flight, claiming as slots free up."""

    def __init__(
        self, engine: AsyncEngine, settings: Settings, session: aiohttp.ClientSession, owner: str
    ) -> None:
        self.settings = settings
        self.outbox = Outbox(engine, owner, lease_seconds(settings))
        self.main = (
            MainApiClient(
                session,
                settings.main_api_url,
                settings.main_api_token.get_secret_value() if settings.main_api_token else None,
                settings.sync_timeout,
            )
            if settings.main_api_url
            else None
        )
        self.webhooks = WebhookClient(session, settings.sync_timeout)
        self.targets = active_targets(settings)

    async def run(
        self,
        *,
        workload_ids: Sequence[str] | None = None,
        max_rows: int | None = None,
        max_seconds: float | None = None,
    ) -> DrainReport:
        deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        state = RunState(self.settings.sync_concurrency, prefetch_window(self.settings))
        try:
            while True:
                over = (max_rows is not None and state.report.claimed >= max_rows) or (
                    deadline is not None and time.monotonic() >= deadline
                )
                if over:
                    state.report.stopped_early = True
                    state.release_ready()  # what was claimed ahead goes back now, not on expiry
                state.start_sends(self._handle)
                limit = state.claim_limit(max_rows)
                if state.claiming is None and not over and not state.exhausted and limit > 0:
                    state.start_claim(limit, self.outbox.claim(limit, self.targets, workload_ids))
                if state.recording is None and state.results:
                    batch, state.results = state.results, []
                    state.recording = asyncio.create_task(self._record(batch))
                waiting = state.waiting()
                if not waiting:
                    break
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    state.finished(task)  # a failed claim or a bug in a send raises here
        finally:
            await self._wind_down(state)
        return state.report

    async def _wind_down(self, state: RunState) -> None:
        """After an error (claiming, a bug): let the sends finish, record what was sent, and
        give back what was claimed but not sent."""
        state.release_ready()
        pending = [t for t in (*state.sends, state.claiming, state.recording) if t is not None]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        sent = [t.result() for t in state.sends if not t.cancelled() and t.exception() is None]
        if sent or state.results:
            await self._record([*state.results, *sent])

    async def _record(self, batch: list[Result]) -> list[Outcome]:
        try:
            outcomes = await self.outbox.record(batch)
        except StorageUnavailable as exc:
            # The sends happened; the leases expire and the rows are re-sent with the same key.
            log.warning("sync.record_failed", rows=len(batch), error=str(exc))
            return [Outcome.LEASE_LOST] * len(batch)
        for result, outcome in zip(batch, outcomes, strict=True):
            if outcome is Outcome.LEASE_LOST:
                log.warning(
                    "sync.lease_lost", outbox_id=result.row.id, workload_id=result.row.workload_id
                )
        return outcomes

    async def _handle(self, row: ClaimedRow) -> Result:
        """Send one row with in-run retries; returns the result to record (no DB here)."""
        attempts = 0
        bound = log.bind(
            outbox_id=row.id,
            workload_id=row.workload_id,
            target=row.target.value,
            transition_id=row.transition_id,
        )
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.sync_attempts)
            | stop_before_delay(self.settings.sync_budget),
            # Exponential with jitter (so a fleet of rows does not retry in lockstep).
            wait=wait_exponential(multiplier=RETRY_INITIAL_WAIT, max=RETRY_MAX_WAIT)
            + wait_random(0, RETRY_INITIAL_WAIT),
            retry=retry_if_exception(lambda exc: getattr(exc, "transient", False) is True),
            before_sleep=_log_before_sleep(bound),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    delivery = await self._send(row)
        except TransientDeliveryError as exc:
            total = row.attempts + attempts
            delay = between_runs_backoff(
                total, self.settings.sync_attempts, self.settings.sync_backoff_max
            )
            bound.warning(
                "sync.gave_up", attempts=total, retry_in_s=round(delay, 2), error=str(exc)
            )
            retry_at = utcnow() + timedelta(seconds=delay)
            values = deferred_values(total, retry_at, exc.status, exc.body, str(exc))
            return Result(row, Outcome.DEFERRED, values)
        total = row.attempts + attempts
        if delivery.verdict is Verdict.DEAD:
            bound.error("sync.dead_letter", status=delivery.status, body=delivery.body[:200])
            error = delivery.error or f"permanent: HTTP {delivery.status}"
            values = dead_values(total, delivery.status, delivery.body, error)
            return Result(row, Outcome.DEAD, values)
        values = delivered_values(total, delivery.status, delivery.body)
        return Result(row, Outcome.DELIVERED, values)

    async def _send(self, row: ClaimedRow) -> Delivery:
        if row.target is OutboxTarget.MAIN:
            if self.main is None:  # not claimed without a URL; guard against a settings change
                raise TransientDeliveryError("main-DB sync disabled (STATUSD_MAIN_API_URL unset)")
            try:
                delivery = await self.main.put_status(row.workload_id, row.payload)
            except TransientDeliveryError:
                SYNC_SENDS.labels(outcome="transient").inc()
                raise
            outcome = (
                "dead"
                if delivery.verdict is Verdict.DEAD
                else ("conflict" if delivery.status == 409 else "synced")
            )
            SYNC_SENDS.labels(outcome=outcome).inc()
            return delivery
        event = str(row.payload.get("event", "unknown"))
        try:
            delivery = await self.webhooks.post_alert(row.destination, row.payload)
        except TransientDeliveryError:
            ALERTS_SENT.labels(event=event, outcome="transient").inc()
            raise
        ALERTS_SENT.labels(event=event, outcome=delivery.verdict.value).inc()
        return delivery


def _log_before_sleep(bound: Any) -> Any:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        bound.warning(
            "sync.retrying", attempt=state.attempt_number, sleep_s=round(sleep, 3), error=str(exc)
        )

    return before_sleep


async def drain(
    engine: AsyncEngine,
    settings: Settings,
    *,
    workload_ids: Sequence[str] | None = None,
    max_rows: int | None = None,
    max_seconds: float | None = None,
) -> DrainReport:
    """Drain due outbox rows until none is eligible (or the row/time limit is reached)."""
    connector = aiohttp.TCPConnector(limit=settings.sync_concurrency)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
        drainer = Drainer(engine, settings, session, new_owner())
        report = await drainer.run(
            workload_ids=workload_ids, max_rows=max_rows, max_seconds=max_seconds
        )
    if report.claimed:
        log.info("sync.drained", **report.as_dict())
    return report
