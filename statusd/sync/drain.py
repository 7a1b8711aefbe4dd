"""Drain the transactional outbox: claim due rows, send them, record what the peer said.

Order: per (target, workload, destination) strictly in transition order. Only the OLDEST pending
row of a workload is eligible, so N+1 is never sent before N is synced or dead-lettered (a dead
row no longer blocks: it is not pending). Different workloads go out in parallel, bounded by
`sync_concurrency`.

Claiming is a lease, taken in a short transaction and committed BEFORE any network call, so no DB
transaction or row lock is held while a peer is slow:
- PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED picks rows nobody else is claiming right now, and
  lease_owner/lease_until are set in the same transaction;
- SQLite: BEGIN IMMEDIATE serializes claimers, and the UPDATE is conditional on the lease being
  free (lease_until < now), so the claim is the same conditional update.
A lease outlives one row's whole send (retry budget + one timeout), so a live worker never has
its row taken; a worker killed mid-send leaves a lease that expires, and the row is re-sent with
the same Idempotency-Key (the transition id): a duplicate the peer recognizes, never a loss.
Results are recorded guarded by lease_owner: a worker that lost its lease writes nothing.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import structlog
from sqlalchemy import exists, or_, select, update
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

from statusd.db import is_sqlite, transaction
from statusd.errors import StorageUnavailable
from statusd.metrics import ALERTS_SENT, SYNC_SENDS
from statusd.models import OutboxEntry, OutboxStatus, OutboxTarget, utcnow
from statusd.settings import Settings
from statusd.sync.delivery import Delivery, TransientDeliveryError, Verdict
from statusd.sync.main_api import MainApiClient
from statusd.sync.webhooks import WebhookClient

log = structlog.get_logger("statusd.sync")

_O = OutboxEntry.__table__  # type: ignore[attr-defined]

RETRY_INITIAL_WAIT = 0.2  # seconds before the first in-run retry; doubles, with jitter
RETRY_MAX_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """One leased outbox row, as the sender needs it."""

    id: int
    transition_id: int
    workload_id: str
    target: OutboxTarget
    destination: str
    payload: dict[str, Any]
    attempts: int


@dataclass
class DrainReport:
    """What one drain run did (returned by the Celery tasks and `statusd sync drain`)."""

    claimed: int = 0
    delivered: int = 0
    dead: int = 0
    deferred: int = 0  # gave up for this run: attempts and next_attempt_at recorded
    lease_lost: int = 0  # the result could not be recorded under our lease (expired, DB down)
    stopped_early: bool = False  # deadline or row limit reached with work possibly left

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_owner() -> str:
    """A lease owner id unique to one drain run: host, pid, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_seconds(settings: Settings) -> float:
    """The lease must outlive one row's sends: the retry budget, the last attempt, and slack."""
    return max(settings.sync_lease, settings.sync_budget + 2 * settings.sync_timeout + 2)


def between_runs_backoff(total_attempts: int, per_run: int, cap: float) -> float:
    """Seconds until a later run retries a row this run gave up on: 2^runs, capped, jittered."""
    runs = max(1, total_attempts // max(1, per_run))
    return min(cap, 2.0 ** min(runs, 16)) * random.uniform(0.5, 1.0)


def active_targets(settings: Settings) -> tuple[OutboxTarget, ...]:
    """Alerts always drain; main-DB sync only with STATUSD_MAIN_API_URL (unset: rows stay pending)."""
    return (
        (OutboxTarget.ALERT, OutboxTarget.MAIN) if settings.main_api_url else (OutboxTarget.ALERT,)
    )


class Outbox:
    """The DB side of draining: claim under a lease, record results guarded by that lease."""

    def __init__(self, engine: AsyncEngine, owner: str, lease: float) -> None:
        self.engine = engine
        self.owner = owner
        self.lease = timedelta(seconds=lease)

    async def claim(
        self, limit: int, targets: Sequence[OutboxTarget], workload_ids: Sequence[str] | None = None
    ) -> list[ClaimedRow]:
        """Lease up to `limit` eligible rows (due, unleased, oldest pending of their workload)."""
        now = utcnow()
        older = _O.alias("older")
        blocked = exists().where(
            older.c.target == _O.c.target,
            older.c.workload_id == _O.c.workload_id,
            older.c.destination == _O.c.destination,
            older.c.status == OutboxStatus.PENDING,
            older.c.transition_id < _O.c.transition_id,
        )
        lease_free = or_(_O.c.lease_until.is_(None), _O.c.lease_until < now)
        query = (
            select(
                _O.c.id,
                _O.c.transition_id,
                _O.c.workload_id,
                _O.c.target,
                _O.c.destination,
                _O.c.payload,
                _O.c.attempts,
            )
            .where(
                _O.c.status == OutboxStatus.PENDING,
                _O.c.target.in_(list(targets)),
                _O.c.next_attempt_at <= now,
                lease_free,
                ~blocked,
            )
            .order_by(_O.c.next_attempt_at, _O.c.id)
            .limit(limit)
        )
        if workload_ids is not None:
            query = query.where(_O.c.workload_id.in_(list(workload_ids)))
        if not is_sqlite(self.engine.url):
            query = query.with_for_update(skip_locked=True, of=_O)
        async with transaction(self.engine) as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                return []
            ids = [r.id for r in rows]
            # The lease starts now, after any wait for the lock (SQLite's BEGIN IMMEDIATE can
            # queue behind other writers): the whole lease is left for sending.
            # Conditional on the lease still being free: on SQLite this IS the claim.
            await conn.execute(
                update(_O)
                .where(_O.c.id.in_(ids), _O.c.status == OutboxStatus.PENDING, lease_free)
                .values(lease_owner=self.owner, lease_until=utcnow() + self.lease)
            )
            mine = set(
                (
                    await conn.execute(
                        select(_O.c.id).where(_O.c.id.in_(ids), _O.c.lease_owner == self.owner)
                    )
                ).scalars()
            )
        return [
            ClaimedRow(
                id=r.id,
                transition_id=r.transition_id,
                workload_id=r.workload_id,
                target=OutboxTarget(r.target),
                destination=r.destination,
                payload=dict(r.payload or {}),
                attempts=r.attempts,
            )
            for r in rows
            if r.id in mine
        ]

    async def _record(self, row: ClaimedRow, values: dict[str, Any]) -> bool:
        async with transaction(self.engine) as conn:
            result = await conn.execute(
                update(_O)
                .where(
                    _O.c.id == row.id,
                    _O.c.lease_owner == self.owner,
                    _O.c.status == OutboxStatus.PENDING,
                )
                .values(lease_owner=None, lease_until=None, **values)
            )
        return bool(result.rowcount == 1)

    async def delivered(self, row: ClaimedRow, delivery: Delivery, attempts: int) -> bool:
        return await self._record(
            row,
            {
                "status": OutboxStatus.SYNCED,
                "synced_at": utcnow(),
                "attempts": row.attempts + attempts,
                "response_status": delivery.status,
                "response_body": delivery.body,
            },
        )

    async def dead(self, row: ClaimedRow, delivery: Delivery, attempts: int) -> bool:
        return await self._record(
            row,
            {
                "status": OutboxStatus.DEAD,
                "attempts": row.attempts + attempts,
                "response_status": delivery.status,
                "response_body": delivery.body,
                "last_error": delivery.error or f"permanent: HTTP {delivery.status}",
            },
        )

    async def defer(
        self, row: ClaimedRow, error: TransientDeliveryError, attempts: int, delay: float
    ) -> bool:
        return await self._record(
            row,
            {
                "attempts": row.attempts + attempts,
                "next_attempt_at": utcnow() + timedelta(seconds=delay),
                "last_error": str(error),
                "response_status": error.status,
                "response_body": error.body,
            },
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

    async def run(
        self,
        *,
        workload_ids: Sequence[str] | None = None,
        max_rows: int | None = None,
        max_seconds: float | None = None,
    ) -> DrainReport:
        report = DrainReport()
        targets = active_targets(self.settings)
        deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        concurrency = self.settings.sync_concurrency
        in_flight: set[asyncio.Task[str]] = set()
        exhausted = False
        try:
            while True:
                over = (max_rows is not None and report.claimed >= max_rows) or (
                    deadline is not None and time.monotonic() >= deadline
                )
                free = concurrency - len(in_flight)
                if max_rows is not None:
                    free = min(free, max_rows - report.claimed)
                if not over and not exhausted and free > 0:
                    rows = await self.outbox.claim(free, targets, workload_ids)
                    report.claimed += len(rows)
                    exhausted = len(rows) < free
                    for row in rows:
                        in_flight.add(asyncio.create_task(self._handle(row)))
                elif over and not report.stopped_early:
                    report.stopped_early = True
                if not in_flight:
                    break
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                failures = [task.exception() for task in done if task.exception() is not None]
                for task in done:
                    if task.exception() is None:
                        outcome = task.result()
                        setattr(report, outcome, getattr(report, outcome) + 1)
                if failures:  # a bug, or the DB gone while recording: stop claiming, surface it
                    raise failures[0]  # type: ignore[misc]
                # A finished row may unblock its workload's next one; new transitions may have landed.
                exhausted = False
        finally:
            if in_flight:  # an error while claiming: let the sends finish and record, then re-raise
                await asyncio.gather(*in_flight, return_exceptions=True)
        return report

    async def _handle(self, row: ClaimedRow) -> str:
        """Send one row with in-run retries and record the result. Returns a DrainReport field."""
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
            delay = between_runs_backoff(
                row.attempts + attempts, self.settings.sync_attempts, self.settings.sync_backoff_max
            )
            bound.warning(
                "sync.gave_up",
                attempts=row.attempts + attempts,
                retry_in_s=round(delay, 2),
                error=str(exc),
            )
            return await self._recorded(
                row, self.outbox.defer(row, exc, attempts, delay), "deferred"
            )
        if delivery.verdict is Verdict.DEAD:
            bound.error("sync.dead_letter", status=delivery.status, body=delivery.body[:200])
            return await self._recorded(row, self.outbox.dead(row, delivery, attempts), "dead")
        return await self._recorded(
            row, self.outbox.delivered(row, delivery, attempts), "delivered"
        )

    async def _recorded(self, row: ClaimedRow, recording: Any, outcome: str) -> str:
        try:
            if await recording:
                return outcome
            log.warning("sync.lease_lost", outbox_id=row.id, workload_id=row.workload_id)
        except StorageUnavailable as exc:
            # The send happened; the lease expires and the row is re-sent with the same key.
            log.warning("sync.record_failed", outbox_id=row.id, error=str(exc))
        return "lease_lost"

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
