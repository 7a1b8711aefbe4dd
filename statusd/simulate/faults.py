"""Fault modes of simulated containers, and the fleet's mix of them (`--faults silent=10,dead=5`)."""

from __future__ import annotations

import random
from enum import StrEnum


class Fault(StrEnum):
    HEALTHY = "healthy"  # heartbeats and answers the whole way
    SILENT = "silent"  # heartbeats stop, the status endpoint still answers (stuck-RUNNING case)
    DEAD = "dead"  # both stop: connections to the endpoint are dropped
    HANG = "hang"  # heartbeats stop; the endpoint accepts and never answers
    FLAP = "flap"  # heartbeats (and the endpoint) stop for a while, then resume
    GARBAGE = "garbage"  # heartbeats stop; the endpoint answers nonsense
    SLOW_START = "slow-start"  # stays PENDING (no heartbeat, endpoint 503) for a long while first


# After these, statusd cannot know the truth: UNREACHABLE or LOST is the right answer.
CONTACT_LOST = frozenset({Fault.DEAD, Fault.HANG, Fault.GARBAGE})


def parse_faults(spec: str) -> dict[Fault, float]:
    """`silent=10,dead=5` -> {SILENT: 10.0, DEAD: 5.0} (percentages, total at most 100)."""
    mix: dict[Fault, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"fault {part!r}: expected name=percent, e.g. silent=10")
        try:
            fault = Fault(name.strip().replace("_", "-"))
        except ValueError:
            choices = ", ".join(f for f in Fault if f is not Fault.HEALTHY)
            raise ValueError(f"unknown fault {name!r}; choose from {choices}") from None
        if fault is Fault.HEALTHY:
            raise ValueError("`healthy` is what is left over, not a fault")
        try:
            pct = float(value)
        except ValueError:
            raise ValueError(f"fault {name!r}: {value!r} is not a number") from None
        if not 0 <= pct <= 100:
            raise ValueError(f"fault {name!r}: {pct} is not a percentage")
        mix[fault] = mix.get(fault, 0.0) + pct
    if sum(mix.values()) > 100:
        raise ValueError(f"fault percentages add up to {sum(mix.values()):g} > 100")
    return mix


def assign_faults(count: int, mix: dict[Fault, float], rng: random.Random) -> list[Fault]:
    """Exactly round(count x pct) containers per fault (the rest healthy), in a seeded shuffle."""
    faults: list[Fault] = []
    for fault, pct in mix.items():
        faults += [fault] * round(count * pct / 100)
    faults = faults[:count]
    faults += [Fault.HEALTHY] * (count - len(faults))
    rng.shuffle(faults)
    return faults
