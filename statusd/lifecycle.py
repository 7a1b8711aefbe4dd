"""The lifecycle of each workload kind, as data, and the pure rule that judges one observation.

Nothing here touches I/O. `statusd.transitions.apply_observation` is the only caller that acts on
a verdict (writes it); everything else (ingest, consumers, sweeper, API) goes through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class Kind(StrEnum):
    TRAINING = "training"
    NOTEBOOK = "notebook"
    DEPLOYMENT = "deployment"


class State(StrEnum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    DEPLOYING = "DEPLOYING"
    RUNNING = "RUNNING"
    READY = "READY"
    IDLE = "IDLE"
    DEGRADED = "DEGRADED"
    STOPPING = "STOPPING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    UNREACHABLE = "UNREACHABLE"
    LOST = "LOST"


class Source(StrEnum):
    PUSH = "push"  # a heartbeat the container sent
    PULL = "pull"  # the container's status endpoint, asked by the sweeper
    API = "api"  # the platform backend (a user pressed stop, say)
    SWEEPER = "sweeper"  # statusd's own verdict: UNREACHABLE, LOST


# Assigned by statusd when contact fails; no container or backend may claim them.
CONTACT_STATES = frozenset({State.UNREACHABLE, State.LOST})
FINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.STOPPED})

# Each kind's phases, in order. A workload may move to any later phase (skipping is fine: a short
# training may report SUCCEEDED first), between siblings of one non-final phase (READY <-> IDLE),
# never to an earlier phase. The last phase holds the final states.
PHASES: dict[Kind, tuple[frozenset[State], ...]] = {
    Kind.TRAINING: (
        frozenset({State.PENDING}),
        frozenset({State.STARTING}),
        frozenset({State.RUNNING}),
        frozenset({State.STOPPING}),
        frozenset({State.SUCCEEDED, State.FAILED, State.STOPPED}),
    ),
    Kind.NOTEBOOK: (
        frozenset({State.PENDING}),
        frozenset({State.STARTING}),
        frozenset({State.READY, State.IDLE}),
        frozenset({State.STOPPING}),
        frozenset({State.STOPPED, State.FAILED}),
    ),
    Kind.DEPLOYMENT: (
        frozenset({State.PENDING}),
        frozenset({State.DEPLOYING}),
        frozenset({State.READY, State.DEGRADED}),
        frozenset({State.STOPPING}),
        frozenset({State.STOPPED, State.FAILED}),
    ),
}

_RANK: dict[Kind, dict[State, int]] = {
    kind: {state: rank for rank, phase in enumerate(phases) for state in phase}
    for kind, phases in PHASES.items()
}


def states_of(kind: Kind) -> frozenset[State]:
    """Every state a workload of this kind can be in, UNREACHABLE and LOST included."""
    return frozenset(_RANK[kind]) | CONTACT_STATES


def reportable_states(kind: Kind) -> frozenset[State]:
    """States a container or the backend may report for this kind (not UNREACHABLE/LOST)."""
    return frozenset(_RANK[kind])


def may_move(kind: Kind, current: State, to: State) -> bool:
    """True when the kind's table allows current -> to (for kind states only)."""
    ranks = _RANK[kind]
    if current not in ranks or to not in ranks or current in FINAL_STATES:
        return False
    return ranks[to] > ranks[current] or (ranks[to] == ranks[current] and to != current)


def allowed_moves(kind: Kind) -> dict[State, frozenset[State]]:
    """The explicit transition table derived from PHASES (for docs, the CLI and tests)."""
    table = {s: frozenset(t for t in _RANK[kind] if may_move(kind, s, t)) for s in _RANK[kind]}
    for s in CONTACT_STATES:
        table[s] = frozenset(_RANK[kind]) - {State.PENDING}
    return table


class Verdict(StrEnum):
    APPLY = "apply"  # a legal change: write it
    UNCHANGED = "unchanged"  # same state: proof of liveness only
    STALE_SEQ = "stale_seq"  # older than what was applied: ignored, never changes state
    REFUSED = "refused"  # illegal: recorded with the rule, never applied


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    rule: str = ""  # for REFUSED: which rule said no, in words an operator can act on


@dataclass(frozen=True, slots=True)
class Current:
    """What the rule needs to know about a workload right now."""

    kind: Kind
    state: State
    prior_state: State | None  # the state before UNREACHABLE/LOST (what recovery is judged from)
    last_seq: int | None
    state_since: datetime | None = None  # when the current state was entered


def _heard_before_entering(current: Current, heard_at: datetime | None) -> bool:
    """Was the report taken before the workload entered its current state?"""
    since = current.state_since
    if heard_at is None or since is None:
        return False
    # SQLite hands back naive datetimes; every stored time is UTC.
    return _aware(heard_at) < _aware(since)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def judge(
    current: Current,
    to: State,
    source: Source,
    seq: int | None,
    heard_at: datetime | None = None,
) -> Judgement:
    """Decide what one observation does to a workload. Pure; the whole lifecycle in one place.

    `heard_at`: when statusd took the report (a heartbeat's stream entry), if known."""
    kind, state = current.kind, current.state
    if to not in states_of(kind):
        return Judgement(Verdict.REFUSED, f"unknown-state: {kind} has no state {to}")
    if seq is not None and current.last_seq is not None and seq <= current.last_seq:
        # Checked before anything else: a late, reordered report proves liveness, nothing more.
        return Judgement(Verdict.STALE_SEQ, f"stale-seq: {seq} <= last applied {current.last_seq}")
    if to == state:
        return Judgement(Verdict.UNCHANGED)
    if state in FINAL_STATES:
        return Judgement(Verdict.REFUSED, f"final: {state} is final, {to} refused")
    if to in CONTACT_STATES:
        if source is not Source.SWEEPER:
            return Judgement(Verdict.REFUSED, f"contact-state: only the sweeper assigns {to}")
        if to is State.LOST and state is not State.UNREACHABLE:
            return Judgement(Verdict.REFUSED, f"lost-needs-unreachable: {state} -> LOST")
        return Judgement(Verdict.APPLY)
    if source is Source.SWEEPER:
        return Judgement(Verdict.REFUSED, f"sweeper-only-contact: the sweeper cannot assign {to}")
    if state in CONTACT_STATES:
        return _recovery(current, to, heard_at)
    if may_move(kind, state, to):
        return Judgement(Verdict.APPLY)
    return Judgement(Verdict.REFUSED, f"backward: {kind} may not go {state} -> {to}")


def _recovery(current: Current, to: State, heard_at: datetime | None) -> Judgement:
    """A report about a workload in UNREACHABLE or LOST."""
    base = current.prior_state
    if to == base and _heard_before_entering(current, heard_at):
        # Taken before the verdict, applied after it (the consumers were held back, by a
        # database outage say): the sweeper judged the silence after this very report or a
        # later one, so it is no sign of life since the verdict, and no change from where the
        # verdict found the workload. Applied, it would clear the verdict until the next sweep
        # gives it again: a second page for one silence.
        return Judgement(Verdict.UNCHANGED)
    # Judged against where the workload was before contact was lost, so a recovering container
    # can stay where it was or move on, but never go backward.
    if base is None or to == base or may_move(current.kind, base, to):
        return Judgement(Verdict.APPLY)
    return Judgement(Verdict.REFUSED, f"backward: {base} (before {current.state}) -> {to}")
