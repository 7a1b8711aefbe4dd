"""Pure timeline arithmetic: which state a workload was in, for how long, within a window, with
the spans that must not count (ingest down; maintenance) cut out. No I/O.

A timeline is one registration (workload id + generation): it starts in PENDING at `start`,
moves at each transition's `recorded_at`, and stops counting at `end` (deregistered, or the next
registration of the id) or as soon as it enters a final state: a finished workload is neither
up nor down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from statusd.lifecycle import FINAL_STATES, State


class StateGroup(StrEnum):
    """What a state means for availability. Final states belong to none: time stops counting."""

    UP = "up"
    DOWN = "down"
    STARTING = "starting"
    STOPPING = "stopping"


GROUP_OF: dict[State, StateGroup] = {
    State.PENDING: StateGroup.STARTING,
    State.STARTING: StateGroup.STARTING,
    State.DEPLOYING: StateGroup.STARTING,
    State.RUNNING: StateGroup.UP,
    State.READY: StateGroup.UP,
    State.IDLE: StateGroup.UP,
    # Serving, if not at its best: up for availability (its own seconds are in `states`).
    State.DEGRADED: StateGroup.UP,
    State.STOPPING: StateGroup.STOPPING,
    State.UNREACHABLE: StateGroup.DOWN,
    State.LOST: StateGroup.DOWN,
}


class Excluded(StrEnum):
    """Why a span is left out of every state group."""

    UNHEARD = "unheard"  # no ingest process was listening: silence proved nothing
    MAINTENANCE = "maintenance"  # a maintenance window covering the workload was in force


@dataclass(frozen=True, slots=True)
class Span:
    start: float  # unix seconds
    end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True, slots=True)
class StateMove:
    at: datetime
    from_state: State
    to_state: State


@dataclass(slots=True)
class Tally:
    """Seconds per state, and per excluded reason."""

    states: dict[State, float] = field(default_factory=dict)
    excluded: dict[Excluded, float] = field(default_factory=dict)

    def add(self, other: Tally, scale: float = 1.0) -> None:
        for state, s in other.states.items():
            self.states[state] = self.states.get(state, 0.0) + s * scale
        for why, s in other.excluded.items():
            self.excluded[why] = self.excluded.get(why, 0.0) + s * scale

    def group_seconds(self) -> dict[StateGroup, float]:
        out = dict.fromkeys(StateGroup, 0.0)
        for state, s in self.states.items():
            group = GROUP_OF.get(state)
            if group is not None:
                out[group] += s
        return out

    @property
    def counted(self) -> float:
        return sum(self.states.values())

    def availability(self) -> float | None:
        """up / (up + down); None when neither (nothing to judge)."""
        groups = self.group_seconds()
        judged = groups[StateGroup.UP] + groups[StateGroup.DOWN]
        return groups[StateGroup.UP] / judged if judged > 0 else None


def segments(
    start: datetime, moves: Sequence[StateMove], end: float, first_state: State | None = None
) -> list[tuple[State, Span]]:
    """(state, span) pieces of one timeline, oldest first, up to `end` or the first final state.
    `first_state` is the state at `start` (PENDING for a fresh registration)."""
    state = first_state or (moves[0].from_state if moves else State.PENDING)
    at = start.timestamp()
    out: list[tuple[State, Span]] = []
    for move in moves:
        if state in FINAL_STATES or at >= end:
            return out
        t = min(max(move.at.timestamp(), at), end)
        out.append((state, Span(at, t)))
        state, at = move.to_state, t
    if state not in FINAL_STATES and at < end:
        out.append((state, Span(at, end)))
    return out


def _clip(span: Span, window: Span) -> Span | None:
    start, end = max(span.start, window.start), min(span.end, window.end)
    return Span(start, end) if end > start else None


def _cut(span: Span, holes: Sequence[Span]) -> tuple[list[Span], float]:
    """`span` without the holes (sorted, not overlapping): the pieces kept, and seconds cut."""
    kept: list[Span] = []
    cut = 0.0
    at = span.start
    for hole in holes:
        if hole.end <= at or hole.start >= span.end:
            continue
        if hole.start > at:
            kept.append(Span(at, hole.start))
        lo, hi = max(hole.start, at), min(hole.end, span.end)
        cut += hi - lo
        at = max(at, hi)
    if at < span.end:
        kept.append(Span(at, span.end))
    return kept, cut


def merged(spans: Iterable[Span]) -> list[Span]:
    """Sorted, overlapping or touching spans joined."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start):
        if out and span.start <= out[-1].end:
            out[-1] = Span(out[-1].start, max(out[-1].end, span.end))
        else:
            out.append(span)
    return out


def tally(
    pieces: Iterable[tuple[State, Span]],
    window: Span,
    excluded: Mapping[Excluded, Sequence[Span]] | None = None,
) -> Tally:
    """Seconds per state inside `window`, with each excluded reason's spans (merged, sorted)
    cut out first in the enum's order: a second is counted once, under the first reason."""
    out = Tally()
    for state, span in pieces:
        clipped = _clip(span, window)
        if clipped is None:
            continue
        rest = [clipped]
        for why in Excluded:
            holes = (excluded or {}).get(why, ())
            if not holes:
                continue
            kept: list[Span] = []
            for piece in rest:
                left, cut = _cut(piece, holes)
                kept += left
                if cut:
                    out.excluded[why] = out.excluded.get(why, 0.0) + cut
            rest = kept
        seconds = sum(p.seconds for p in rest)
        if seconds:
            out.states[state] = out.states.get(state, 0.0) + seconds
    return out
