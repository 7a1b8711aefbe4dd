"""Drain the transactional outbox: claim due rows, send them, record what the peer said.

Order: per (target, workload, destination) strictly in transition order. Only the OLDEST pending
row of a workload is eligible, so N+1 is never sent before N is synced or dead-lettered (a dead
row no longer blocks: it is not pending). Different workloads go out in parallel, bounded by
`sync_concurrency`.

Three loops share one run, and only two of them touch the database (statusd.sync.outbox):
- claim: a batch of rows to send ahead, one statement, leased and committed BEFORE any
  network call, so no DB transaction or row lock is held while a peer is slow;
- send: one lane per send slot makes each row's first attempt, and a row that needs more (its
  in-run retries, a busy slot) goes on in a task of its own (statusd.sync.run_state); at most
  `sync_concurrency` requests in flight per peer, fewer while the peer fails
  (statusd.sync.send_slots: a row sleeping before a retry holds no slot); no DB at all;
- write: results collected while the previous batch was being written, written together in one
  transaction (group commit), each row guarded by its lease; the same transaction renews the
  leases of the rows still held when one is running short.
So the DB work is per batch, not per row, and a run holds at most two pooled connections.
A row's send never outlives its claim (statusd.sync.lease): an attempt starts only if it ends,
timeout included, well before the row's lease does, so a live worker never has a row in flight
that another may claim. A worker killed mid-send leaves a lease that expires, and the row is
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
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from statusd.errors import StatusdError, StorageUnavailable
from statusd.metrics import ALERTS_SENT, SYNC_SENDS
from statusd.models import OutboxTarget, utcnow
from statusd.settings import Settings
from statusd.sync.delivery import Delivery, DeliveryVerdict, SendOutcome, TransientDeliveryError
from statusd.sync.lease import RowLease, lease_seconds, retry_sleep
from statusd.sync.main_api import MainApiClient
from statusd.sync.outbox import (
    ClaimedRow,
    Outbox,
    RowOutcome,
    SendResult,
    dead_values,
    deferred_values,
    delivered_values,
)
from statusd.sync.run_state import DrainReport, RunState, Write
from statusd.sync.send_slots import SendSlots
from statusd.sync.webhooks import WebhookClient

log = structlog.get_logger("statusd.sync")


# A failed write (database blip) is retried after these pauses, doubling, while the batch's rows
# stay leased for at least WRITE_RETRY_ROOM more (a retry is one short transaction).
WRITE_RETRY_FIRST = 0.1
WRITE_RETRY_MAX = 2.0
WRITE_RETRY_ROOM = 1.0


class LeaseRunningOut(StatusdError):
    """Not one more attempt: it could still be in flight when the row's lease ends."""


@dataclass(frozen=True, slots=True)
class _Tried:
    """A row's first attempt, made by a lane, failed transiently: its task retries from here."""

    started: float  # monotonic, when the first attempt started (the retry budget counts from it)
    error: TransientDeliveryError


def new_owner() -> str:
    """A lease owner id unique to one drain run: host, pid, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
        self.webhooks = WebhookClient(session, settings)
        self.targets = active_targets(settings)
        # One adaptive limit per peer (the main API; each webhook destination), each capped by
        # STATUSD_SYNC_CONCURRENCY: one failing peer backs off alone.
        self.send_slots: dict[tuple[OutboxTarget, str], SendSlots] = {}

    def _slots(self, row: ClaimedRow) -> SendSlots:
        peer = (row.target, row.destination if row.target is OutboxTarget.ALERT else "")
        slots = self.send_slots.get(peer)
        if slots is None:
            slots = self.send_slots[peer] = SendSlots(self.settings.sync_concurrency)
        return slots

    async def run(
        self,
        *,
        workload_ids: Sequence[str] | None = None,
        max_rows: int | None = None,
        max_seconds: float | None = None,
    ) -> DrainReport:
        deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        state = RunState(self.settings.sync_concurrency, self.outbox.lease.total_seconds())
        state.start_lanes(lambda: self._lane(state))
        try:
            while True:
                now = time.monotonic()
                over = (
                    (max_rows is not None and state.report.claimed >= max_rows)
                    or (deadline is not None and now >= deadline)
                    or state.lease_starved
                )
                if over:
                    state.report.stopped_early = True
                    state.release_ready()  # what was claimed ahead goes back now, not on expiry
                limit = state.claim_limit(max_rows)
                if state.claiming is None and not over and not state.exhausted and limit > 0:
                    state.start_claim(limit, self.outbox.claim(limit, self.targets, workload_ids))
                renew_in = state.renewal_due(now)
                write_in = state.write_due(now)
                if state.writing is None and any(
                    due is not None and due <= 0 for due in (renew_in, write_in)
                ):
                    state.start_write(self._write, now)
                    renew_in = write_in = None
                if not state.busy():
                    break
                # Wake for a renewal or a write even if no task finishes before it is due.
                dues = [max(0.0, due) for due in (renew_in, write_in) if due is not None]
                wake_after = min(dues) if dues and state.writing is None else None
                for task in await state.next_done(wake_after):
                    state.finished(task)  # a failed claim or a bug in a send raises here
        finally:
            await self._wind_down(state)
        return state.report

    async def _lane(self, state: RunState) -> None:
        """Send ready rows one after another: each row's first attempt here, the rest of a row
        that needs more (a retry, a busy send slot) in a task of its own."""
        while (row := await state.next_row()) is not None:
            lease = state.leases[row.id]
            first = await self._first_attempt(row, lease)
            if isinstance(first, SendResult):
                state.sent(first)
            else:
                state.hand_off(self._handle(row, lease, first))

    async def _first_attempt(self, row: ClaimedRow, lease: RowLease) -> SendResult | _Tried | None:
        """A row's first attempt, if its peer has a send slot free right now: the result, or the
        transient failure to retry after (_Tried). None: no slot free, nothing tried."""
        slots = self._slots(row)
        if not slots.free():
            return None
        if not lease.may_start(self.settings.sync_timeout):
            return SendResult(row, RowOutcome.RELEASED, {})
        started = time.monotonic()
        try:
            async with slots.slot():  # free: taken without waiting
                delivery = await self._send(row)
        except TransientDeliveryError as exc:
            return _Tried(started, exc)
        return self._result(row, 1, delivery)

    async def _wind_down(self, state: RunState) -> None:
        """After an error (claiming, a bug): let the sends finish, record what was sent, and
        give back what was claimed but not sent."""
        state.release_ready()
        state.close()
        pending = [
            t for t in (*state.lanes, *state.sends, state.claiming, state.writing) if t is not None
        ]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        sent = [t.result() for t in state.sends if not t.cancelled() and t.exception() is None]
        if sent or state.results:
            batch = [*state.results, *sent]
            await self._write(batch, [], state.held_until(batch))

    async def _write(self, batch: list[SendResult], renew: list[int], held_until: float) -> Write:
        """Write a batch; a database blip is retried while every row is still under our lease.

        The sends happened: giving up on the write means the leases expire and the rows are
        re-sent (same Idempotency-Key, a duplicate the peer recognizes), so it is worth a few
        retries first. Held rows keep the deadlines they had meanwhile: their sends stop
        starting attempts in time."""

        def no_time_left(state: RetryCallState) -> bool:
            return time.monotonic() + state.upcoming_sleep + WRITE_RETRY_ROOM > held_until

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(StorageUnavailable),
            wait=wait_exponential(multiplier=WRITE_RETRY_FIRST, max=WRITE_RETRY_MAX),
            stop=no_time_left,
            before_sleep=_log_write_retry(len(batch)),
            reraise=True,
        )
        try:
            written: Write = await retrying(self.outbox.write, batch, renew)
        except StorageUnavailable as exc:
            log.warning("sync.record_failed", rows=len(batch), error=str(exc))
            return [RowOutcome.LEASE_LOST] * len(batch), None
        outcomes, renewed = written
        for result, outcome in zip(batch, outcomes, strict=True):
            if outcome is RowOutcome.LEASE_LOST:
                log.warning(
                    "sync.lease_lost", outbox_id=result.row.id, workload_id=result.row.workload_id
                )
        return outcomes, renewed

    async def _handle(
        self, row: ClaimedRow, lease: RowLease, tried: _Tried | None = None
    ) -> SendResult:
        """Send one row with in-run retries; returns the result to record (no DB here).
        `tried`: its first attempt was made (by a lane) and failed transiently.

        Before every attempt the row's lease is checked: an attempt that could still be running
        when the lease ends is not started (the row goes back unsent, or is deferred if it was
        tried already), so no other drainer can claim a row we have in flight."""
        attempts = 0 if tried is None else 1
        started = time.monotonic() if tried is None else tried.started
        slots = self._slots(row)
        try:
            if tried is not None:
                await self._before_retry(row, attempts, started, slots, tried.error)
            while True:
                try:
                    # The slot is held for the request only, never through a backoff sleep; the
                    # lease is checked once the slot is ours, as the request starts right then.
                    async with slots.slot():
                        if not lease.may_start(self.settings.sync_timeout):
                            raise LeaseRunningOut(row.id)
                        attempts += 1
                        delivery = await self._send(row)
                    break
                except TransientDeliveryError as exc:
                    await self._before_retry(row, attempts, started, slots, exc)
        except LeaseRunningOut:
            if attempts == 0:
                return SendResult(row, RowOutcome.RELEASED, {})
            _row_log(row).warning("sync.lease_running_out", attempts=row.attempts + attempts)
            retry_at = utcnow()  # not the peer's fault: due again at once, for whoever claims it
            values = deferred_values(
                row.attempts + attempts, retry_at, None, None, "lease running out"
            )
            return SendResult(row, RowOutcome.DEFERRED, values)
        except TransientDeliveryError as exc:
            total = row.attempts + attempts
            delay = between_runs_backoff(
                total, self.settings.sync_attempts, self.settings.sync_backoff_max
            )
            _row_log(row).warning(
                "sync.gave_up", attempts=total, retry_in_s=round(delay, 2), error=str(exc)
            )
            retry_at = utcnow() + timedelta(seconds=delay)
            values = deferred_values(total, retry_at, exc.status, exc.body, str(exc))
            return SendResult(row, RowOutcome.DEFERRED, values)
        return self._result(row, attempts, delivery)

    async def _before_retry(
        self,
        row: ClaimedRow,
        attempts: int,
        started: float,
        slots: SendSlots,
        error: TransientDeliveryError,
    ) -> None:
        """Sleep before the next attempt, holding no send slot; re-raise `error` when this run
        makes no more attempts for the row."""
        sleep = self._retry_sleep(attempts, started, peer_failing=slots.failing)
        if sleep is None:
            raise error
        _row_log(row).warning(
            "sync.retrying", attempt=attempts, sleep_s=round(sleep, 3), error=str(error)
        )
        await asyncio.sleep(sleep)

    def _result(self, row: ClaimedRow, attempts: int, delivery: Delivery) -> SendResult:
        """The result to record for a row its peer answered (`attempts` made in this run)."""
        total = row.attempts + attempts
        if delivery.verdict is DeliveryVerdict.DEAD:
            _row_log(row).error(
                "sync.dead_letter", status=delivery.status, body=delivery.body[:200]
            )
            error = delivery.error or f"permanent: HTTP {delivery.status}"
            values = dead_values(total, delivery.status, delivery.body, error)
            return SendResult(row, RowOutcome.DEAD, values)
        values = delivered_values(total, delivery.status, delivery.body)
        return SendResult(row, RowOutcome.DELIVERED, values)

    def _retry_sleep(self, attempts: int, started: float, *, peer_failing: bool) -> float | None:
        """The sleep before the next in-run retry; None: no more in this run (STATUSD_SYNC_ATTEMPTS
        made, or the sleep would cross STATUSD_SYNC_BUDGET, counted from the first attempt).

        A plain loop around the attempts rather than tenacity: almost every row is sent once,
        and tenacity's per-call machinery cost a tenth of the drain's CPU (docs/benchmarks.md)."""
        if attempts >= self.settings.sync_attempts:
            return None
        sleep = retry_sleep(attempts, peer_failing=peer_failing)
        if time.monotonic() - started + sleep >= self.settings.sync_budget:
            return None
        return sleep

    async def _send(self, row: ClaimedRow) -> Delivery:
        if row.target is OutboxTarget.MAIN:
            if self.main is None:  # not claimed without a URL; guard against a settings change
                raise TransientDeliveryError("main-DB sync disabled (STATUSD_MAIN_API_URL unset)")
            if row.transition_id is None:  # written with every main-API row; guard a bad one
                body = f"main-API row {row.id} has no transition id"
                return Delivery(DeliveryVerdict.DEAD, None, body, error=body)
            try:
                delivery = await self.main.put_status(row.workload_id, row.transition_id, row.body)
            except TransientDeliveryError:
                _sync_sends(SendOutcome.TRANSIENT).inc()
                raise
            if delivery.verdict is DeliveryVerdict.DEAD:
                outcome = SendOutcome.DEAD
            elif delivery.status == 409:
                outcome = SendOutcome.CONFLICT
            else:
                outcome = SendOutcome.SYNCED
            _sync_sends(outcome).inc()
            return delivery
        payload = row.payload
        event = str(payload.get("event", "unknown"))
        peer = self.webhooks.peer(row.destination)
        labels = {"event": event, "receiver": peer.receiver, "format": peer.format}
        try:
            delivery = await self.webhooks.post_alert(row.destination, payload)
        except TransientDeliveryError:
            ALERTS_SENT.labels(**labels, outcome=SendOutcome.TRANSIENT).inc()
            raise
        outcome = (
            SendOutcome.DEAD if delivery.verdict is DeliveryVerdict.DEAD else SendOutcome.DELIVERED
        )
        ALERTS_SENT.labels(**labels, outcome=outcome).inc()
        return delivery


# prometheus_client's labels() takes a lock and builds a key on every call: each outcome's child
# is looked up once per process.
_SYNC_SENDS: dict[SendOutcome, Any] = {}


def _sync_sends(outcome: SendOutcome) -> Any:
    child = _SYNC_SENDS.get(outcome)
    if child is None:
        child = _SYNC_SENDS[outcome] = SYNC_SENDS.labels(outcome=outcome)
    return child


def _log_write_retry(rows: int) -> Any:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("sync.record_retrying", rows=rows, sleep_s=round(sleep, 3), error=str(exc))

    return before_sleep


def _row_log(row: ClaimedRow) -> Any:
    """A logger naming the row: bound only when there is something to say, as binding costs
    more than a healthy row's whole bookkeeping."""
    return log.bind(
        outbox_id=row.id,
        workload_id=row.workload_id,
        target=row.target.value,
        transition_id=row.transition_id,
    )


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
