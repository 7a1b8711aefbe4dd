"""The one place a workload's state changes.

`apply_observation` judges an observation with the lifecycle table (statusd.lifecycle.judge) and,
in ONE database transaction, writes the new state, the transition row and its outbox rows (main-DB
sync, alerts), or records the refusal. Heartbeats (push), polls (pull), the sweeper and the
platform backend (api) all come through here; nothing else in the project updates `state`.

Concurrency: the workload row is locked for the whole transaction (SELECT ... FOR UPDATE on
PostgreSQL; BEGIN IMMEDIATE on SQLite takes the database write lock), and the UPDATE is also
conditional on the version read, so even a missed lock can never produce a lost update.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from statusd import metrics, silences
from statusd.alerting import AlertEvent, FlapPolicy, alert_event, contact_event
from statusd.db import is_sqlite, transaction
from statusd.errors import RedisUnavailable, UnknownWorkload
from statusd.flaps import flap_times
from statusd.lifecycle import CONTACT_STATES, Current, Kind, Source, State, Verdict, judge
from statusd.models import (
    OutboxEntry,
    OutboxTarget,
    RefusedObservation,
    Transition,
    Workload,
    utcnow,
)
from statusd.state_cache import StateCache

log = structlog.get_logger("statusd.transitions")

_W = Workload.__table__  # type: ignore[attr-defined]
_T = Transition.__table__  # type: ignore[attr-defined]
_R = RefusedObservation.__table__  # type: ignore[attr-defined]
_O = OutboxEntry.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Observation:
    """Something someone saw or asked for: `workload_id` is (or should be) in `state`."""

    workload_id: str
    state: State
    source: Source
    seq: int | None = None  # containers' per-workload increasing counter; None for api/sweeper
    observed_at: datetime | None = None
    reason: str | None = None
    actor: str | None = None  # who: "heartbeat", "node:<agent>", "api", "sweeper", ...
    generation: int | None = None  # the token's registration generation; None = current


class Outcome(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    STALE_SEQ = "stale_seq"
    REFUSED = "refused"
    WRONG_GENERATION = "wrong_generation"  # a token from before a DELETE + re-register


@dataclass(frozen=True, slots=True)
class AppliedTransition:
    id: int
    workload_id: str
    kind: Kind
    from_state: State
    to_state: State
    source: Source
    reason: str | None
    seq: int | None
    observed_at: datetime
    recorded_at: datetime
    generation: int
    actor: str | None
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    state: State  # the workload's state after this observation
    version: int
    rule: str = ""  # REFUSED / STALE_SEQ: the rule, in words
    transition: AppliedTransition | None = None


TransitionListener = Callable[[AppliedTransition], Awaitable[None]]


@dataclass
class Ledger:
    """What apply_observation needs: the engine, the state cache, and post-commit listeners."""

    engine: AsyncEngine
    cache: StateCache | None = None
    alert_webhooks: Sequence[str] = ()
    flap_policy: FlapPolicy = field(default_factory=FlapPolicy)
    listeners: list[TransitionListener] = field(default_factory=list)


async def apply_observation(ledger: Ledger, obs: Observation) -> Result:
    """Judge `obs` and write the verdict. Raises UnknownWorkload, StorageUnavailable, RedisUnavailable."""
    observed_at = obs.observed_at or utcnow()
    async with transaction(ledger.engine) as conn:
        row = await _lock_workload(conn, obs.workload_id)
        if row is None:
            raise UnknownWorkload(f"workload {obs.workload_id!r} is not registered")
        kind, state, version = Kind(row.kind), State(row.state), int(row.version)
        if obs.generation is not None and obs.generation != row.generation:
            return Result(
                Outcome.WRONG_GENERATION, state, version, "token generation is not current"
            )
        prior = State(row.prior_state) if row.prior_state else None
        judgement = judge(Current(kind, state, prior, row.last_seq), obs.state, obs.source, obs.seq)
        transition: AppliedTransition | None = None
        if judgement.verdict is Verdict.REFUSED:
            await _record_refusal(conn, obs, state, version, judgement.rule, observed_at)
        elif judgement.verdict is Verdict.UNCHANGED and obs.seq is not None:
            # Same state, newer seq: remember the seq, or a late older report (seq between the
            # last applied change and this one) could still change state and win over it.
            await conn.execute(
                update(_W)
                .where(_W.c.id == obs.workload_id, _W.c.version == version)
                .values(last_seq=obs.seq)
            )
        elif judgement.verdict is Verdict.APPLY:
            # Invalidate before the commit: if we die between commit and write-back, the entry is
            # simply absent (consumers ask the DB), never stale.
            await _invalidate_cache(ledger, obs.workload_id, version + 1)
            transition = await _write_transition(conn, ledger, row, obs, kind, state, observed_at)

    generation = int(row.generation)
    if transition is None:
        outcome = _OUTCOMES[judgement.verdict]
        known_seq = (
            obs.seq if outcome is Outcome.UNCHANGED and obs.seq is not None else row.last_seq
        )
        if ledger.cache is not None:
            # Re-seed the cache after a miss, so the next steady heartbeat skips the database.
            await _best_effort(
                ledger.cache.store(obs.workload_id, state, version, generation, kind, known_seq)
            )
            if outcome is Outcome.REFUSED:
                await _best_effort(
                    ledger.cache.mark_refused(obs.workload_id, version, obs.state.value)
                )
        if outcome is Outcome.REFUSED:
            metrics.REFUSED.labels(kind=kind.value, source=obs.source.value).inc()
            log.info(
                "transition.refused",
                workload_id=obs.workload_id,
                kind=kind.value,
                state=state.value,
                requested=obs.state.value,
                source=obs.source.value,
                rule=judgement.rule,
            )
        return Result(outcome, state, version, judgement.rule)

    new_version = version + 1
    if ledger.cache is not None:
        await _best_effort(
            ledger.cache.store(
                obs.workload_id,
                obs.state,
                new_version,
                generation,
                kind,
                obs.seq if obs.seq is not None else row.last_seq,
            )
        )
    log.info(
        "transition",
        workload_id=obs.workload_id,
        kind=kind.value,
        transition_id=transition.id,
        **{"from": state.value, "to": obs.state.value},
        source=obs.source.value,
        reason=obs.reason,
        seq=obs.seq,
    )
    for listener in ledger.listeners:
        await _best_effort(listener(transition))
    return Result(Outcome.APPLIED, obs.state, new_version, transition=transition)


_OUTCOMES = {
    Verdict.UNCHANGED: Outcome.UNCHANGED,
    Verdict.STALE_SEQ: Outcome.STALE_SEQ,
    Verdict.REFUSED: Outcome.REFUSED,
}


async def _record_refusal(
    conn: AsyncConnection,
    obs: Observation,
    state: State,
    version: int,
    rule: str,
    observed_at: datetime,
) -> None:
    await conn.execute(
        insert(_R).values(
            workload_id=obs.workload_id,
            current_state=state,
            requested_state=obs.state.value,
            source=obs.source,
            actor=obs.actor,
            rule=rule,
            reason=obs.reason,
            seq=obs.seq,
            workload_version=version,
            observed_at=observed_at,
            recorded_at=utcnow(),
        )
    )


async def _lock_workload(conn: AsyncConnection, workload_id: str) -> Row[Any] | None:
    query = select(_W).where(_W.c.id == workload_id, _W.c.deleted_at.is_(None))
    if not is_sqlite(conn.engine.url):
        query = query.with_for_update()  # SQLite: BEGIN IMMEDIATE already holds the write lock
    return (await conn.execute(query)).first()


async def _write_transition(
    conn: AsyncConnection,
    ledger: Ledger,
    row: Row[Any],
    obs: Observation,
    kind: Kind,
    state: State,
    observed_at: datetime,
) -> AppliedTransition:
    now = utcnow()
    to = obs.state
    # Entering UNREACHABLE/LOST remembers where the workload was, so recovery is judged from it.
    prior = (row.prior_state or state) if to in CONTACT_STATES else None
    values: dict[str, object] = {
        "state": to,
        "prior_state": prior,
        "version": row.version + 1,
        "state_changed_at": now,
    }
    if obs.seq is not None:
        values["last_seq"] = obs.seq
    if obs.source in (Source.PUSH, Source.PULL):
        values["last_seen_at"] = observed_at
        values["poll_failures"] = 0
    updated = await conn.execute(
        update(_W).where(_W.c.id == obs.workload_id, _W.c.version == row.version).values(**values)
    )
    if updated.rowcount != 1:  # cannot happen while we hold the lock; refuse to write blind
        raise RuntimeError(f"lost the row lock on workload {obs.workload_id!r}")
    fields: dict[str, Any] = {
        "workload_id": obs.workload_id,
        "kind": kind,
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
    inserted = await conn.execute(insert(_T).values(**fields).returning(_T.c.id))
    applied = AppliedTransition(id=inserted.scalar_one(), labels=dict(row.labels or {}), **fields)
    event = None
    if ledger.alert_webhooks and contact_event(state, to) is not None:
        event = await _alert_event(conn, ledger.flap_policy, applied)
    await conn.execute(insert(_O), _outbox_rows(applied, ledger.alert_webhooks, event))
    return applied


async def _alert_event(
    conn: AsyncConnection, policy: FlapPolicy, t: AppliedTransition
) -> AlertEvent | None:
    """Read what the alert decision needs (silences in force, recent flaps) in this transaction."""
    in_force = await silences.active_in(conn, t.recorded_at)
    earlier = await flap_times(
        conn,
        {t.workload_id: t.generation},
        t.recorded_at - timedelta(seconds=policy.lookback_s),
        before_transition=t.id,
    )
    return alert_event(
        t.from_state,
        t.to_state,
        at=t.recorded_at.timestamp(),
        silenced=silences.silenced(in_force, t.workload_id, t.kind, t.labels),
        earlier_flaps=earlier.get(t.workload_id, []),
        policy=policy,
    )


def _outbox_rows(
    t: AppliedTransition, webhooks: Sequence[str], event: AlertEvent | None
) -> list[dict[str, object]]:
    """Outbox rows for one transition: always the main-DB sync; one alert per webhook when the
    alert decision (statusd.alerting.alert_event) names an event."""
    now = utcnow()
    base = {
        "transition_id": t.id,
        "workload_id": t.workload_id,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "status": "pending",
    }
    rows: list[dict[str, object]] = [
        {
            **base,
            "target": OutboxTarget.MAIN,
            "destination": "",
            "payload": {
                "state": t.to_state.value,
                "previous": t.from_state.value,
                "changed_at": t.recorded_at.isoformat(),
                "transition_id": t.id,
                "source": t.source.value,
                "reason": t.reason,
            },
        }
    ]
    if webhooks and event is not None:
        payload = alert_payload(t, event)
        rows += [
            {**base, "target": OutboxTarget.ALERT, "destination": url, "payload": payload}
            for url in webhooks
        ]
    return rows


def alert_payload(t: AppliedTransition, event: AlertEvent) -> dict[str, object]:
    """A JSON alert that Slack-compatible webhooks render (`text`) and machines parse (the rest)."""
    icon = {
        "unreachable": ":warning:",
        "lost": ":rotating_light:",
        "recovered": ":white_check_mark:",
        "flapping": ":repeat:",
    }.get(event, "")
    owner = t.labels.get("owner")
    flapping = (
        " and flapping (further flaps are not alerted)" if event is AlertEvent.FLAPPING else ""
    )
    text = (
        f"{icon} statusd: {t.kind.value} `{t.workload_id}` is {t.to_state.value} "
        f"(was {t.from_state.value}){flapping}"
        + (f", owner {owner}" if owner else "")
        + (f": {t.reason}" if t.reason else "")
    )
    return {
        "text": text.strip(),
        "event": event.value,
        "workload_id": t.workload_id,
        "kind": t.kind.value,
        "state": t.to_state.value,
        "previous": t.from_state.value,
        "transition_id": t.id,
        "changed_at": t.recorded_at.isoformat(),
        "labels": t.labels,
        "reason": t.reason,
    }


async def _invalidate_cache(ledger: Ledger, workload_id: str, next_version: int) -> None:
    if ledger.cache is None:
        return
    try:
        await ledger.cache.invalidate(workload_id, next_version)
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
