"""The shapes statusd.transitions speaks: an observation in, a result (and a transition) out.

Kept apart from the writer so the outbox rows (statusd.transition_outbox) and the post-commit
listeners can name them without importing the writer itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from statusd.lifecycle import Kind, Source, State


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
    heard_at: datetime | None = None  # when statusd took a pushed report (its stream entry)


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


# Post-commit: called once per committed batch with its transitions, in commit order, so a listener
# that talks to Redis or a broker pays one round trip per batch, not one per transition.
TransitionListener = Callable[[Sequence[AppliedTransition]], Awaitable[None]]
