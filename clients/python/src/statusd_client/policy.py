"""When to send the next heartbeat: the schedule both Heartbeater and AsyncHeartbeater follow."""

from __future__ import annotations

import random
from dataclasses import dataclass

from statusd_client.transport import Accepted, Outcome, Transient

MIN_DELAY_S = 0.05  # a server asking for 0 must not turn the loop into a busy spin
MAX_DELAY_S = 300.0  # nor may one asking for a day silence us for that long


@dataclass
class Schedule:
    """Interval after success; full-jitter exponential backoff after transient failures.

    Full jitter (a uniform draw in [0, cap]) spreads a fleet of clients that all lost statusd at
    the same moment, so they do not come back in lockstep; Retry-After is a floor, never shortened.
    """

    interval_s: float
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    failures: int = 0

    def after(self, outcome: Outcome) -> float:
        """Seconds to wait before the next send, given what the last send produced."""
        if isinstance(outcome, Accepted):
            self.failures = 0
            wanted = outcome.next_heartbeat_s
            return _clamp(self.interval_s if wanted is None else wanted)
        self.failures += 1
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(self.failures - 1, 16))
        delay = random.uniform(MIN_DELAY_S, max(MIN_DELAY_S, cap))
        if isinstance(outcome, Transient) and outcome.retry_after_s is not None:
            delay = max(delay, min(outcome.retry_after_s, MAX_DELAY_S))
        return delay


def _clamp(seconds: float) -> float:
    return max(MIN_DELAY_S, min(MAX_DELAY_S, seconds))
