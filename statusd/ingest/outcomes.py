"""What became of each heartbeat report a consumer handled: one StrEnum, one counter per value.

The first five are `statusd.transitions.Outcome` values (what `apply_observation` decided); the
rest are the consumer's own (a report never sent to the database, or never applied)."""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import Counter

from statusd import metrics


class ConsumeOutcome(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    STALE_SEQ = "stale_seq"
    REFUSED = "refused"
    WRONG_GENERATION = "wrong_generation"  # a token from before a DELETE + re-register
    UNKNOWN = "unknown"  # no such (non-deleted) workload: a deregistered container talking
    SKIPPED = "skipped"  # the state cache says it changes nothing: no SQL
    COLLAPSED = "collapsed"  # superseded by a newer report of the same workload in the batch
    DEAD_LETTER = "dead_letter"
    FAILED = "failed"  # gave up after max_deliveries attempts


# Reports that are not the registration's own: never recorded as its last_seq (no sign of life).
NOT_COUNTED = frozenset({ConsumeOutcome.WRONG_GENERATION, ConsumeOutcome.UNKNOWN})


def outcome_counters() -> dict[ConsumeOutcome, Counter]:
    """statusd_consumer_entries_total{outcome}, one child per outcome, made once per ConsumerSet."""
    return {o: metrics.CONSUMER_APPLIED.labels(outcome=o.value) for o in ConsumeOutcome}
