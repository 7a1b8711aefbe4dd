"""The one place a workload's state changes.

`apply_observations` judges observations with the lifecycle table (statusd.lifecycle.judge) and,
in ONE database transaction per batch, writes each workload's new state, its transition rows and
their outbox rows (main-DB sync, alerts), or records the refusals. Heartbeats (push), polls
(pull), the sweeper and the platform backend (api) all come through here (`apply_observation` is
a batch of one); nothing else in the project updates `state`.

Concurrency: every workload of the batch is locked for the whole transaction (SELECT ... FOR
UPDATE in id order on PostgreSQL; BEGIN IMMEDIATE on SQLite takes the database write lock), and
the UPDATE is also conditional on the version read, so even a missed lock can never produce a
lost update. Observations of one workload are judged in the order given, each against the state
the previous one left. A batch commits whole or not at all; when it fails for a reason that is
not transient (a value the database refuses), the rest is retried one observation per
transaction, so one poison workload fails alone and nothing is applied twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from statusd import dependencies, metrics
from statusd.alert_routes import AlertRoutes
from statusd.alerting import AlertEvent, FlapPolicy, contact_event
from statusd.db import transaction
from statusd.errors import RedisUnavailable, StatusdError, UnknownWorkload
from statusd.lifecycle import CONTACT_STATES, Current, Kind, Source, State, Verdict, judge
from statusd.models import utcnow
from statusd.outbox_writer import OutboxEvent, write_outbox
from statusd.state_cache import StateCache
from statusd.transition_outbox import outbox_events, read_alert_event
from statusd.transition_sql import (
    WRITE_BACK_FIELDS,
    insert_refusals,
    insert_transitions,
    lock_workloads,
    write_back,
)
from statusd.transition_types import (
    AppliedTransition,
    Observation,
    Outcome,
    Result,
    TransitionListener,
)

__all__ = [
    "AppliedTransition",
    "Ledger",
    "Observation",
    "Outcome",
    "Result",
    "TransitionListener",
    "apply_observation",
    "apply_observations",
]

log = structlog.get_logger("statusd.transitions")

# Called inside the transaction, before the first read and right before the commit; raising
# aborts the batch (the consumers' lease fencing: a holder that lost its shard commits nothing).
Guard = Callable[[], None]


@dataclass
class Ledger:
    """What apply_observation needs: the engine, the state cache, and post-commit listeners."""

    engine: AsyncEngine
    cache: StateCache | None = None
    # Every alert destination (webhooks, Alertmanagers, receivers); a plain sequence is webhooks.
    alert_webhooks: AlertRoutes | Sequence[str] = ()
    flap_policy: FlapPolicy = field(default_factory=FlapPolicy)
    # Liveness for the dependency holds (None: only a parent's UNREACHABLE/LOST state holds).
    parents: dependencies.ParentWatch | None = None
    listeners: list[TransitionListener] = field(default_factory=list)


async def apply_observation(ledger: Ledger, obs: Observation) -> Result:
    """Judge `obs` and write the verdict. Raises UnknownWorkload, StorageUnavailable, RedisUnavailable."""
    (result,) = await apply_observations(ledger, [obs])
    if isinstance(result, Exception):
        raise result
    return result


async def apply_observations(
    ledger: Ledger, observations: Sequence[Observation], *, guard: Guard | None = None
) -> list[Result | Exception]:
    """Judge and write a batch; one answer per observation, in order.

    An answer is a Result, UnknownWorkload (not registered, or deleted), or the error that kept
    that observation (and the later ones of its workload) from being written. Transient failures
    (StorageUnavailable, RedisUnavailable) and whatever `guard` raises are raised instead: nothing
    of the batch was committed then, and the whole batch may be retried."""
    if not observations:
        return []
    try:
        return await _commit(ledger, observations, guard)
    except StatusdError:
        raise  # transient, or the guard's: nothing committed, the caller decides
    except Exception as exc:
        if len(observations) == 1:
            return [exc]
        log.warning("transition.batch_failed", error=f"{type(exc).__name__}: {exc}")
    # Retry the rest one observation per transaction: the poison fails alone.
    answers: list[Result | Exception] = []
    failed: dict[str, Exception] = {}
    for obs in observations:
        earlier = failed.get(obs.workload_id)
        if earlier is not None:  # keep the workload's order: nothing after its failure
            answers.append(earlier)
            continue
        try:
            (answer,) = await _commit(ledger, [obs], guard)
        except StatusdError:
            raise
        except Exception as exc:
            answer = exc
        if isinstance(answer, Exception) and not isinstance(answer, UnknownWorkload):
            failed[obs.workload_id] = answer
        answers.append(answer)
    return answers


@dataclass
class _Locked:
    """A locked workload row as the batch's observations move it, and what to write back."""

    kind: Kind
    generation: int
    labels: dict[str, str]
    read_version: int
    values: dict[str, Any]  # the WRITE_BACK_FIELDS, current
    parent: str | None = None  # statusd.dependencies
    dirty: bool = False
    touched: bool = False  # the state cache gets this workload's final state
    failed: Exception | None = None

    @property
    def state(self) -> State:
        return State(self.values["state"])


@dataclass
class _Plan:
    answers: list[Result | Exception] = field(default_factory=list)
    rows: dict[str, _Locked] = field(default_factory=dict)
    # (index of the observation, version it makes, transition row)
    transitions: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    refused_marks: list[tuple[str, int, str]] = field(default_factory=list)
    refused_logs: list[tuple[Observation, _Locked, State, str]] = field(default_factory=list)


async def _commit(
    ledger: Ledger, observations: Sequence[Observation], guard: Guard | None
) -> list[Result | Exception]:
    ids = list(dict.fromkeys(o.workload_id for o in observations))
    async with transaction(ledger.engine) as conn:
        if guard is not None:
            guard()
        locked = await lock_workloads(conn, ids)
        plan = _judge_all(observations, locked)
        applying = {
            wid: int(row.values["version"])
            for wid, row in plan.rows.items()
            if row.values["version"] != row.read_version
        }
        # Invalidate before the commit: if we die between commit and write-back, the entries are
        # simply absent (consumers ask the DB), never stale.
        await _invalidate_cache(ledger, applying)
        await write_back(
            conn,
            [(wid, row.read_version, row.values) for wid, row in plan.rows.items() if row.dirty],
        )
        applied = await _write_history(conn, ledger, observations, plan)
        await insert_refusals(conn, plan.refusals)
        if guard is not None:
            guard()
    await _after_commit(ledger, plan, applied)
    return plan.answers


def _judge_all(observations: Sequence[Observation], locked: dict[str, RowMapping]) -> _Plan:
    """Pure: each observation judged against the state the previous ones left (no I/O)."""
    plan = _Plan()
    now = utcnow()
    for index, obs in enumerate(observations):
        found = locked.get(obs.workload_id)
        if found is None:
            plan.answers.append(UnknownWorkload(f"workload {obs.workload_id!r} is not registered"))
            continue
        row = plan.rows.get(obs.workload_id)
        if row is None:
            row = plan.rows[obs.workload_id] = _Locked(
                Kind(found["kind"]),
                int(found["generation"]),
                dict(found["labels"] or {}),
                int(found["version"]),
                {k: found[k] for k in WRITE_BACK_FIELDS},
                parent=found["parent"],
            )
        if row.failed is not None:
            plan.answers.append(row.failed)
            continue
        try:
            plan.answers.append(_judge_one(plan, index, obs, row, now))
        except Exception as exc:  # a row this code cannot read: this workload only
            row.failed = exc
            plan.answers.append(exc)
    return plan


def _judge_one(plan: _Plan, index: int, obs: Observation, row: _Locked, now: datetime) -> Result:
    values = row.values
    state, version = row.state, int(values["version"])
    if obs.generation is not None and obs.generation != row.generation:
        return Result(Outcome.WRONG_GENERATION, state, version, "token generation is not current")
    row.touched = True
    prior = State(values["prior_state"]) if values["prior_state"] else None
    judgement = judge(
        Current(row.kind, state, prior, values["last_seq"], values["state_changed_at"]),
        obs.state,
        obs.source,
        obs.seq,
        obs.heard_at,
    )
    observed_at = obs.observed_at or now
    if judgement.verdict is Verdict.REFUSED:
        plan.refusals.append(
            {
                "workload_id": obs.workload_id,
                "current_state": state,
                "requested_state": obs.state.value,
                "source": obs.source,
                "actor": obs.actor,
                "rule": judgement.rule,
                "reason": obs.reason,
                "seq": obs.seq,
                "workload_version": version,
                "observed_at": observed_at,
                "recorded_at": now,
            }
        )
        plan.refused_marks.append((obs.workload_id, version, obs.state.value))
        plan.refused_logs.append((obs, row, state, judgement.rule))
        return Result(Outcome.REFUSED, state, version, judgement.rule)
    if judgement.verdict is Verdict.UNCHANGED:
        if obs.seq is not None:
            # Same state, newer seq: remember the seq, or a late older report (seq between the
            # last applied change and this one) could still change state and win over it.
            values["last_seq"] = obs.seq
            row.dirty = True
        return Result(Outcome.UNCHANGED, state, version, judgement.rule)
    if judgement.verdict is Verdict.STALE_SEQ:
        return Result(Outcome.STALE_SEQ, state, version, judgement.rule)
    to = obs.state
    # Entering UNREACHABLE/LOST remembers where the workload was, so recovery is judged from it.
    values["prior_state"] = (prior or state) if to in CONTACT_STATES else None
    values["state"] = to
    values["version"] = version + 1
    values["state_changed_at"] = now
    if obs.seq is not None:
        values["last_seq"] = obs.seq
    if obs.source in (Source.PUSH, Source.PULL):
        values["last_seen_at"] = observed_at
        values["poll_failures"] = 0
    row.dirty = True
    fields: dict[str, Any] = {
        "workload_id": obs.workload_id,
        "kind": row.kind,
        "from_state": state,
        "to_state": to,
        "source": obs.source,
        "reason": obs.reason,
        "seq": obs.seq,
        "observed_at": observed_at,
        "recorded_at": now,
        "generation": row.generation,
        "actor": obs.actor,
    }
    plan.transitions.append((index, version + 1, fields))
    return Result(Outcome.APPLIED, to, version + 1)  # transition filled in once it has an id


async def _write_history(
    conn: AsyncConnection, ledger: Ledger, observations: Sequence[Observation], plan: _Plan
) -> list[AppliedTransition]:
    """Transition rows (one INSERT), then their outbox rows (one INSERT), in observation order."""
    ids = await insert_transitions(conn, [fields for _, _, fields in plan.transitions])
    applied: list[AppliedTransition] = []
    outbox: list[OutboxEvent] = []
    holds = dependencies.Holds(ledger.parents)
    for (index, version, fields), tid in zip(plan.transitions, ids, strict=True):
        row = plan.rows[observations[index].workload_id]
        t = AppliedTransition(id=tid, labels=row.labels, **fields)
        plan.answers[index] = Result(Outcome.APPLIED, t.to_state, version, transition=t)
        event = None
        if ledger.alert_webhooks and contact_event(t.from_state, t.to_state) is not None:
            # After this batch's write-back: a parent convicted earlier in it counts as down.
            held_by = await dependencies.hold(conn, holds, t, row.parent)
            # Reads this transaction's own earlier rows too: flaps within one batch count.
            event = await read_alert_event(conn, ledger.flap_policy, t, suppressed_by=held_by)
        outbox += outbox_events(t, ledger.alert_webhooks, event)
        if (
            ledger.alert_webhooks
            and contact_event(t.from_state, t.to_state) is AlertEvent.RECOVERED
        ):
            # A parent back in contact: its children still down raise their held alerts now,
            # in this same transaction.
            outbox += await dependencies.release(conn, [t.workload_id], ledger.alert_webhooks)
        applied.append(t)
    await write_outbox(conn, outbox)
    return applied


async def _after_commit(ledger: Ledger, plan: _Plan, applied: list[AppliedTransition]) -> None:
    """Post-commit work: one Redis round trip for the cache, then logs, metrics and listeners."""
    if ledger.cache is not None:
        entries = [
            (
                wid,
                row.state,
                int(row.values["version"]),
                row.generation,
                row.kind,
                row.values["last_seq"],
            )
            for wid, row in plan.rows.items()
            if row.touched
        ]
        # Re-seeds after a miss too, so the next steady heartbeat skips the database.
        await _best_effort(ledger.cache.store_many(entries, plan.refused_marks))
    for obs, row, state, rule in plan.refused_logs:
        metrics.REFUSED.labels(kind=row.kind.value, source=obs.source.value).inc()
        log.info(
            "transition.refused",
            workload_id=obs.workload_id,
            kind=row.kind.value,
            state=state.value,
            requested=obs.state.value,
            source=obs.source.value,
            rule=rule,
        )
    for t in applied:
        log.info(
            "transition",
            workload_id=t.workload_id,
            kind=t.kind.value,
            transition_id=t.id,
            **{"from": t.from_state.value, "to": t.to_state.value},
            source=t.source.value,
            reason=t.reason,
            seq=t.seq,
        )
    if applied:
        for listener in ledger.listeners:
            await _best_effort(listener(applied))


async def _invalidate_cache(ledger: Ledger, next_versions: dict[str, int]) -> None:
    if ledger.cache is None or not next_versions:
        return
    try:
        await ledger.cache.invalidate_many(next_versions)
    except Exception as exc:  # any Redis failure: refuse the change rather than risk a stale cache
        raise RedisUnavailable(
            f"redis unavailable while invalidating the state cache: {exc}"
        ) from exc


async def _best_effort(awaitable: Awaitable[object]) -> None:
    """Post-commit work: the commit stands whatever happens here (the cache heals, sync polls)."""
    try:
        await awaitable
    except Exception as exc:
        log.warning("transition.post_commit_failed", error=f"{type(exc).__name__}: {exc}")
