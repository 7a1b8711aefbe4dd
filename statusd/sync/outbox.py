"""The DB side of draining the outbox: claim a batch under a lease, record a batch of results.

Both sides are batched so a steady drain costs two short transactions per BATCH of rows, not three
per row, and holds at most two pooled connections whatever STATUSD_SYNC_CONCURRENCY is (the
senders never touch the database: a pool smaller than the concurrency used to open and close a
PostgreSQL session per row).

Claim: ONE statement, `UPDATE outbox SET lease_owner, lease_until WHERE id IN (eligible rows)
RETURNING ...`, committed before any network call so no row lock is held while a peer is slow:
- PostgreSQL: the eligible rows are picked `FOR UPDATE SKIP LOCKED` (two drainers never wait on
  each other, and never claim the same row), walking ix_outbox_due and looking older rows up in
  ix_outbox_workload_order, so a claim costs the batch it returns, not the backlog behind it;
- SQLite: BEGIN IMMEDIATE serializes claimers, and the UPDATE is conditional on the lease being
  free (lease_until < now), so the claim is that conditional update.
Eligible: pending, due, lease free, and the OLDEST pending row (by id: the order rows were
written, statusd.outbox_writer) of its (target, workload, destination): N+1 is never sent before N
is synced or dead-lettered. A workload's rows are written in its transitions' order (each
transition holds the workload's row lock until its rows commit).

Write: one transaction per batch that records results (one UPDATE per outcome, each row guarded
by lease_owner and status, so a worker that lost its lease writes nothing for that row) and renews
the leases of the rows still held (claimed ahead, or sent and waiting), so record and renewal
never take row locks against each other. Rows are locked in id order, like every other drainer's.
How long a lease lasts and when a send may start under it: statusd.sync.lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Text,
    any_,
    bindparam,
    cast,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from statusd.db import is_sqlite, transaction
from statusd.models import OutboxStatus, OutboxTarget, utcnow
from statusd.tables import OUTBOX


class RowOutcome(StrEnum):
    """What became of one claimed row in this run (a DrainReport counter of the same name)."""

    DELIVERED = "delivered"
    DEAD = "dead"
    DEFERRED = "deferred"  # gave up for this run: attempts and next_attempt_at recorded
    LEASE_LOST = "lease_lost"  # the result could not be recorded under our lease
    RELEASED = "released"  # claimed but not sent (no time left under its lease): given back


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """One leased outbox row, as the sender needs it."""

    id: int
    transition_id: int | None  # None: an event no transition caused (statusd's own alerts)
    workload_id: str
    target: OutboxTarget
    destination: str
    # The payload as stored (JSON): the main API gets these bytes as they are, never decoded and
    # encoded again; an alert decodes them to render its receiver's format.
    body: bytes
    attempts: int

    @property
    def payload(self) -> dict[str, Any]:
        decoded = orjson.loads(self.body) if self.body else None
        return decoded if isinstance(decoded, dict) else {}


@dataclass(frozen=True, slots=True)
class SendResult:
    """A send's result, waiting to be recorded: the outcome and the columns it sets."""

    row: ClaimedRow
    outcome: RowOutcome
    values: dict[str, Any]


def _claim_statement(
    targets: Sequence[OutboxTarget], workload_ids: Sequence[str] | None, sqlite: bool
) -> Any:
    pick = OUTBOX.alias("pick")
    older = OUTBOX.alias("older")
    blocked = exists().where(
        older.c.target == pick.c.target,
        older.c.workload_id == pick.c.workload_id,
        older.c.destination == pick.c.destination,
        older.c.status == OutboxStatus.PENDING,
        older.c.id < pick.c.id,
    )
    eligible = (
        select(pick.c.id)
        .where(
            pick.c.status == OutboxStatus.PENDING,
            pick.c.target.in_(list(targets)),
            pick.c.next_attempt_at <= bindparam("now"),
            or_(pick.c.lease_until.is_(None), pick.c.lease_until < bindparam("now")),
            ~blocked,
        )
        # next_attempt_at alone: the order of ix_outbox_due, so PostgreSQL walks that index and
        # stops at `limit` (adding `id` made it sort every pending row on every claim).
        .order_by(pick.c.next_attempt_at)
        .limit(bindparam("limit"))
    )
    if workload_ids is not None:
        eligible = eligible.where(pick.c.workload_id.in_(list(workload_ids)))
    claimable: tuple[ColumnElement[bool], ...]
    if sqlite:
        claimable = (
            OUTBOX.c.id.in_(eligible),
            # Re-checked on the row itself: on SQLite this conditional update IS the claim.
            OUTBOX.c.status == OutboxStatus.PENDING,
            or_(OUTBOX.c.lease_until.is_(None), OUTBOX.c.lease_until < bindparam("now")),
        )
    else:
        eligible = eligible.with_for_update(skip_locked=True, of=pick)
        # `id = ANY(ARRAY(subquery))`: the picked ids are computed once and looked up by primary
        # key; `id IN (subquery)` was planned as a hash join over a scan of the whole outbox. No
        # other condition on the row: the subquery locked it with its conditions re-checked, and
        # a `status` one lured the planner onto ix_outbox_status_created, every pending row.
        claimable = (OUTBOX.c.id == any_(func.array(eligible.scalar_subquery())),)
    return (
        update(OUTBOX)
        .where(*claimable)
        .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"))
        .returning(
            OUTBOX.c.id,
            OUTBOX.c.transition_id,
            OUTBOX.c.workload_id,
            OUTBOX.c.target,
            OUTBOX.c.destination,
            cast(OUTBOX.c.payload, Text).label("body"),
            OUTBOX.c.attempts,
        )
    )


# One statement per outcome, built once: every row of that outcome reuses its compiled form.
_GUARD = (
    OUTBOX.c.id == bindparam("row_id"),
    OUTBOX.c.lease_owner == bindparam("owner"),
    OUTBOX.c.status == OutboxStatus.PENDING,
)
_RELEASE = {"lease_owner": None, "lease_until": None}
_RECORD = {
    RowOutcome.DELIVERED: update(OUTBOX)
    .where(*_GUARD)
    .values(
        **_RELEASE,
        status=OutboxStatus.SYNCED,
        synced_at=bindparam("at"),
        attempts=bindparam("attempts"),
        response_status=bindparam("response_status"),
        response_body=bindparam("response_body"),
    ),
    RowOutcome.DEAD: update(OUTBOX)
    .where(*_GUARD)
    .values(
        **_RELEASE,
        status=OutboxStatus.DEAD,
        attempts=bindparam("attempts"),
        response_status=bindparam("response_status"),
        response_body=bindparam("response_body"),
        last_error=bindparam("last_error"),
    ),
    RowOutcome.DEFERRED: update(OUTBOX)
    .where(*_GUARD)
    .values(
        **_RELEASE,
        attempts=bindparam("attempts"),
        next_attempt_at=bindparam("next_attempt_at"),
        response_status=bindparam("response_status"),
        response_body=bindparam("response_body"),
        last_error=bindparam("last_error"),
    ),
    RowOutcome.RELEASED: update(OUTBOX).where(*_GUARD).values(**_RELEASE),
}


# The claim's plan on PostgreSQL, whatever the table's statistics say: walk ix_outbox_due in
# order and stop at the limit. Statistics taken while few rows were pending (the steady state)
# make the planner expect one row, and then it picks a bitmap scan of EVERY pending row, an
# anti-join on each and a sort: a burst of 8,000 pending rows made each claim 20-60 ms of the
# database's CPU instead of a few. Local to the claim's transaction.
_WALK_THE_DUE_INDEX = text("SET LOCAL enable_bitmapscan = off")


class Outbox:
    """Claims and records for one drain run (one lease owner)."""

    def __init__(self, engine: AsyncEngine, owner: str, lease: float) -> None:
        self.engine = engine
        self.owner = owner
        self.lease = timedelta(seconds=lease)
        self._sqlite = is_sqlite(engine.url)
        listed: ColumnElement[bool] = (
            OUTBOX.c.id.in_(bindparam("ids", expanding=True))
            if self._sqlite
            # One statement whatever the batch's size: an expanding IN is a new statement, and a
            # new prepare on the server, for every count of ids.
            else OUTBOX.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger)))
        )
        ours = select(OUTBOX.c.id).where(
            listed,
            OUTBOX.c.lease_owner == bindparam("owner"),
            OUTBOX.c.status == OutboxStatus.PENDING,
        )
        # In id order, so two writers (ours and a claimer's re-check) lock rows in one order.
        ours = ours.order_by(OUTBOX.c.id)
        self._ours = ours if self._sqlite else ours.with_for_update()
        self._renew = (
            update(OUTBOX)
            .where(
                listed,
                OUTBOX.c.lease_owner == bindparam("owner"),
                OUTBOX.c.status == OutboxStatus.PENDING,
            )
            .values(lease_until=bindparam("until"))
            .returning(OUTBOX.c.id)
        )
        self._claims: dict[tuple[tuple[OutboxTarget, ...], tuple[str, ...] | None], Any] = {}

    async def claim(
        self, limit: int, targets: Sequence[OutboxTarget], workload_ids: Sequence[str] | None = None
    ) -> list[ClaimedRow]:
        """Lease up to `limit` eligible rows in one statement."""
        key = (tuple(targets), tuple(workload_ids) if workload_ids is not None else None)
        statement = self._claims.get(key)
        if statement is None:
            statement = self._claims[key] = _claim_statement(targets, workload_ids, self._sqlite)
        async with transaction(self.engine) as conn:
            if not self._sqlite:
                await conn.execute(_WALK_THE_DUE_INDEX)
            # Taken inside the transaction: SQLite's BEGIN IMMEDIATE may have queued behind other
            # writers, and the whole lease is left for sending.
            now = utcnow()
            rows = (
                await conn.execute(
                    statement,
                    {"now": now, "limit": limit, "owner": self.owner, "until": now + self.lease},
                )
            ).all()
        return [
            ClaimedRow(
                id=r.id,
                transition_id=r.transition_id,
                workload_id=r.workload_id,
                target=OutboxTarget(r.target),
                destination=r.destination,
                body=r.body.encode() if r.body else b"",
                attempts=r.attempts,
            )
            for r in rows
        ]

    async def write(
        self, results: Sequence[SendResult], renew: Sequence[int] = ()
    ) -> tuple[list[RowOutcome], set[int]]:
        """Record a batch and renew the leases of `renew`, in one transaction.

        Returns each result's outcome (LEASE_LOST for a row whose lease we lost) and the ids whose
        lease was renewed (a missing id is no longer ours). The rows still ours are locked first
        (SQLite: BEGIN IMMEDIATE holds the write lock), so the guarded updates that follow, one
        executemany per outcome, cannot miss: which rows were recorded is known without a per-row
        round trip. The new lease is counted from before the transaction, like a claim's.
        """
        ids = sorted({result.row.id for result in results} | set(renew))
        renewed: set[int] = set()
        async with transaction(self.engine) as conn:
            now = utcnow()
            ours = set(
                (await conn.execute(self._ours, {"ids": ids, "owner": self.owner})).scalars()
            )
            by_outcome: dict[RowOutcome, list[dict[str, Any]]] = {}
            for result in results:
                if result.row.id in ours:
                    params = {"row_id": result.row.id, "owner": self.owner, **result.values}
                    by_outcome.setdefault(result.outcome, []).append(params)
            for outcome, params_list in by_outcome.items():
                await conn.execute(_RECORD[outcome], params_list)
            keep = sorted(ours.intersection(renew))
            if keep:
                params = {"ids": keep, "owner": self.owner, "until": now + self.lease}
                renewed = set((await conn.execute(self._renew, params)).scalars())
        outcomes = [r.outcome if r.row.id in ours else RowOutcome.LEASE_LOST for r in results]
        return outcomes, renewed


def delivered_values(attempts: int, status: int | None, body: str | None) -> dict[str, Any]:
    return {"at": utcnow(), "attempts": attempts, "response_status": status, "response_body": body}


def dead_values(attempts: int, status: int | None, body: str | None, error: str) -> dict[str, Any]:
    return {
        "attempts": attempts,
        "response_status": status,
        "response_body": body,
        "last_error": error,
    }


def deferred_values(
    attempts: int, retry_at: datetime, status: int | None, body: str | None, error: str
) -> dict[str, Any]:
    return {
        "attempts": attempts,
        "next_attempt_at": retry_at,
        "response_status": status,
        "response_body": body,
        "last_error": error,
    }
