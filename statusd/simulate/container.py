"""One simulated container: its true lifecycle over time, its fault, what it says when asked.

Times are seconds since the fleet started. A container's truth is a plan of (time, state) steps
through its kind's lifecycle; `freeze()` stops the clock for the settle phase, so the truth the
summary compares against no longer moves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

from statusd.lifecycle import Kind, State
from statusd.simulate.faults import CONTACT_LOST, Fault


class Endpoint(StrEnum):
    """How the status endpoint behaves at a given moment."""

    ANSWER = "answer"
    UNAVAILABLE = "unavailable"  # 503
    RESET = "reset"  # connection dropped
    HANG = "hang"
    GARBAGE = "garbage"


@dataclass
class SimContainer:
    id: str
    kind: Kind
    fault: Fault
    plan: list[tuple[float, State]]  # (time, state), time ascending
    fault_at: float = float("inf")  # when the fault starts (silent/dead/hang/garbage/flap)
    fault_until: float = float("inf")  # flap: when it ends; slow-start: when it finally starts
    token: str | None = None
    seq: int = 0
    frozen_at: float | None = None
    polls: list[float] = field(default_factory=list)  # monotonic arrival time of each status GET

    def clock(self, t: float) -> float:
        return t if self.frozen_at is None else min(t, self.frozen_at)

    def true_state(self, t: float) -> State:
        """What the container itself knows it is at time t."""
        t = self.clock(t)
        if self.fault in CONTACT_LOST:
            t = min(t, self.fault_at)  # a dead container's truth stops where it died
        state = State.PENDING
        for at, step in self.plan:
            if at > t:
                break
            state = step
        return state

    def next_seq(self) -> int:
        """Every report (heartbeat or answer) carries a newer seq, as the contract asks."""
        self.seq += 1
        return self.seq

    def heartbeating(self, t: float) -> bool:
        if self.fault is Fault.HEALTHY:
            return True
        if self.fault is Fault.SLOW_START:
            return t >= self.fault_until
        if self.fault is Fault.FLAP:
            return not self.fault_at <= t < self.fault_until
        return t < self.fault_at

    def endpoint(self, t: float) -> Endpoint:
        if self.fault is Fault.SLOW_START and t < self.fault_until:
            return Endpoint.UNAVAILABLE
        if self.fault is Fault.FLAP and self.fault_at <= t < self.fault_until:
            return Endpoint.UNAVAILABLE
        if t >= self.fault_at:
            return {
                Fault.DEAD: Endpoint.RESET,
                Fault.HANG: Endpoint.HANG,
                Fault.GARBAGE: Endpoint.GARBAGE,
            }.get(self.fault, Endpoint.ANSWER)
        return Endpoint.ANSWER

    def freeze(self, t: float) -> None:
        self.frozen_at = t

    def expected(self, t: float) -> frozenset[State]:
        """What statusd should say once it has settled."""
        if self.fault in CONTACT_LOST:
            return frozenset({State.UNREACHABLE, State.LOST})
        return frozenset({self.true_state(t)})


def plan_lifecycle(kind: Kind, duration: float, rng: random.Random) -> list[tuple[float, State]]:
    """A random walk through the kind's lifecycle within `duration` seconds, ending final or steady."""
    a = rng.uniform(0.05, 0.15) * duration
    b = rng.uniform(0.18, 0.3) * duration
    c = rng.uniform(0.6, 0.85) * duration
    d = min(c + 0.08 * duration, 0.95 * duration)
    roll = rng.random()
    if kind is Kind.TRAINING:
        end = State.SUCCEEDED if roll < 0.75 else State.FAILED
        return [(a, State.STARTING), (b, State.RUNNING), (c, end)]
    if kind is Kind.NOTEBOOK:
        plan = [(a, State.STARTING), (b, State.READY)]
        if roll < 0.4:
            return [*plan, (c, State.IDLE)]  # steady
        if roll < 0.75:
            return [*plan, (c, State.STOPPING), (d, State.STOPPED)]
        return plan  # steady READY
    plan = [(a, State.DEPLOYING), (b, State.READY)]
    if roll < 0.25:
        return [*plan, (c, State.DEGRADED)]
    if roll < 0.5:
        return [*plan, (c, State.STOPPING), (d, State.STOPPED)]
    return plan


def make_container(
    workload_id: str, kind: Kind, fault: Fault, duration: float, rng: random.Random
) -> SimContainer:
    """A container whose fault strikes mid-life: after it started, before any final state."""
    plan = plan_lifecycle(kind, duration, rng)
    c = SimContainer(workload_id, kind, fault, plan)
    if fault in (Fault.SILENT, Fault.DEAD, Fault.HANG, Fault.GARBAGE):
        c.fault_at = rng.uniform(0.3, 0.5) * duration  # after RUNNING/READY, before the end
    elif fault is Fault.FLAP:
        c.fault_at = rng.uniform(0.2, 0.3) * duration
        c.fault_until = c.fault_at + 0.3 * duration
    elif fault is Fault.SLOW_START:
        c.fault_until = rng.uniform(0.3, 0.4) * duration
        c.plan = [(c.fault_until + at * 0.55, state) for at, state in plan]
    return c
