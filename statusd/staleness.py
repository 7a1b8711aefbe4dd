"""When a workload is stale, and what silence or a failed poll does to it: the one rule.

Every part that judges liveness asks this module: the API's `stale`, the stale report, the
sweeper's Redis range queries (`Judge.cutoffs`) and its per-workload filter, the poll verdicts
(UNREACHABLE, LOST, the back-off of UNREACHABLE workloads) and disruption mode. A `Judge` is the
rule fixed at one moment: the settings, what ingest could have heard (statusd.hearing) and `now`.
A workload's own side is its `Facts`.

Silence is counted between two moments:
- from the workload's last sign of life (or, never seen, its registration), or from the end of a
  span during which it was excused (`Facts.quiet_until`: a maintenance window, a quiet period the
  workload announced), whichever is later: after an excuse ends it gets a full allowance again
  (a quiet period is written into the `last_seen` score itself: ingest moves the deadline);
- up to `now`, but no later than the last moment ingest is known to have listened (`heard_until`):
  the first seconds of an ingest outage, before it is noticed, count for nothing.
Until `deaf_until` (ingest down, or statusd just started) silence proves nothing at all.

The sweeper's candidates come from range queries over the liveness sorted sets; the cutoffs of
those queries and the per-workload answer are the same comparison against the same numbers, so
the two cannot disagree (tests check it against a real Redis). Per-workload excuses are not in
Redis: the query finds a superset, and `Judge.silent` drops the excused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from statusd.hearing import LISTEN_BEAT_S, LISTEN_GAP_S, Hearing, paced_interval
from statusd.lifecycle import CONTACT_STATES, FINAL_STATES, State
from statusd.settings import Settings


class StaleReason(StrEnum):
    LOST = "lost"
    UNREACHABLE = "unreachable"
    STALE = "stale"  # no sign of life within the silence allowed
    NEVER_SEEN = "never_seen"  # PENDING past STATUSD_START_TIMEOUT without any sign of life


@dataclass(frozen=True, slots=True)
class Facts:
    """One workload as liveness sees it (unix seconds)."""

    state: State
    last_seen: float | None  # newest sign of life (heartbeat or good poll); None: never heard
    registered_at: float  # the start-timeout clock of a workload never heard from
    quiet_until: float | None = None  # silence excused until then (maintenance, quiet period)


@dataclass(frozen=True, slots=True)
class Stale:
    """Why a workload needs attention, and since when it has been silent."""

    reason: StaleReason
    silent_since: float  # last sign of life, registration, or the end of its last excuse


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """The bounds of the sweeper's range queries: a member is silent when its score is strictly
    below the cutoff of its set."""

    last_seen_before: float  # `last_seen` scores below this: silent past the allowance
    pending_before: float  # `pending_since` scores below this: never seen past the start timeout

    @staticmethod
    def exclusive(cutoff: float) -> str:
        """The ZRANGEBYSCORE bound "score < cutoff" (repr round-trips the exact double)."""
        return f"({cutoff!r}"


def silence_allowed(tracked: int, settings: Settings) -> float:
    """Silence allowed before a seen workload is stale: the paced interval it was told plus 2/3 of
    the TTL (equal to STATUSD_HEARTBEAT_TTL while the fleet is small enough not to be paced), so
    nobody is stale for obeying the pace."""
    return paced_interval(tracked, settings) + settings.heartbeat_ttl * 2 / 3


def deaf_until(hearing: Hearing, settings: Settings, now: float) -> float | None:
    """Until when silence proves nothing (None: never deaf). While no ingest is listening, that is
    forever; then STATUSD_STARTUP_GRACE after listening resumed."""
    if hearing.last_beat is None:
        return None  # no ingest ever ran against this Redis (a sweeper-only setup)
    if now - hearing.last_beat > LISTEN_GAP_S:
        return math.inf
    return hearing.listening_since + settings.effective_startup_grace


def heard_until(hearing: Hearing) -> float | None:
    """The last moment ingest is known to have listened (None: no ingest ever beat here)."""
    return None if hearing.last_beat is None else hearing.last_beat + LISTEN_BEAT_S


@dataclass(frozen=True, slots=True)
class Judge:
    """The liveness rule at one moment."""

    allowed: float  # silence allowed to a workload seen before
    start_timeout: float  # silence allowed to one never seen
    now: float
    deaf_until: float | None = None
    heard_until: float | None = None
    interval: float = 0.0  # the heartbeat interval workloads are told (paced)

    @classmethod
    def of(cls, settings: Settings, hearing: Hearing | None, now: float) -> Judge:
        """The rule for these settings; without `hearing`, the plain TTL and never deaf."""
        if hearing is None:
            return cls(
                settings.heartbeat_ttl,
                settings.start_timeout,
                now,
                interval=paced_interval(0, settings),
            )
        return cls(
            allowed=silence_allowed(hearing.tracked, settings),
            start_timeout=settings.start_timeout,
            now=now,
            deaf_until=deaf_until(hearing, settings, now),
            heard_until=heard_until(hearing),
            interval=paced_interval(hearing.tracked, settings),
        )

    @property
    def counted_until(self) -> float:
        """Silence is counted up to this moment."""
        return self.now if self.heard_until is None else min(self.now, self.heard_until)

    @property
    def silence_counts(self) -> bool:
        """Whether silence (no heartbeat, a failed poll) can mean anything now."""
        return self.deaf_until is None or self.now >= self.deaf_until

    def cutoffs(self) -> Cutoffs:
        until = self.counted_until
        return Cutoffs(until - self.allowed, until - self.start_timeout)

    def silent(self, facts: Facts) -> Stale | None:
        """Silent past its allowance, whatever the state and whether we could hear: what the
        sweeper polls (a poll may bring good news even while ingest is deaf; a failed one then
        counts for nothing, see `silence_counts`)."""
        cut = self.cutoffs()
        if facts.last_seen is not None:
            since, cutoff, reason = facts.last_seen, cut.last_seen_before, StaleReason.STALE
        else:
            since, cutoff, reason = facts.registered_at, cut.pending_before, StaleReason.NEVER_SEEN
        if facts.quiet_until is not None and facts.quiet_until > since:
            # Excused until then: silence counts from the end, with a full allowance of its kind
            # (a workload never heard from gets its start timeout again). Only `since` moves, so
            # the range queries, which know no excuse, still find a superset.
            since = facts.quiet_until
        return Stale(reason, since) if since < cutoff else None

    def staleness(self, facts: Facts) -> Stale | None:
        """Why a workload needs attention, or None: what the API's `stale` and the stale report
        show. Final states expect nothing; UNREACHABLE and LOST are no contact by definition;
        otherwise silence past the allowance, while silence can mean anything."""
        if facts.state in FINAL_STATES:
            return None
        since = facts.last_seen if facts.last_seen is not None else facts.registered_at
        if facts.state is State.LOST:
            return Stale(StaleReason.LOST, since)
        if facts.state is State.UNREACHABLE:
            return Stale(StaleReason.UNREACHABLE, since)
        if not self.silence_counts:
            return None
        return self.silent(facts)

    def silent_with(self, parent: Facts, child: Facts) -> bool:
        """Whether `parent` is down, or went silent together with `child`, at this moment: what
        holds the child's unreachable/lost alert (statusd.dependencies).

        When a node dies, its agent (the parent) and its containers (the children) stop at the
        same instant, but their last heartbeats differ by up to one heartbeat interval: a child
        that beat a little earlier is past its allowance up to one interval before the parent,
        and the sweeper may convict it first. So the parent counts as down when it is stale by
        this rule (UNREACHABLE, LOST, or silent past its allowance), or when it has not been
        heard since one interval after the child's last sign of life. A healthy parent was
        heard within the last interval, while a convicted child has been silent for a whole
        allowance (an interval plus 2/3 of the TTL), so the two cases cannot meet while pacing
        keeps the interval under 2/3 of the TTL. Whichever of the two the sweeper convicts
        first, the child's alert is held and the parent's alone goes out. A parent that proves
        alive after all (heard again without going UNREACHABLE; or, under heavy pacing, a
        healthy one) has the holds it caused released at the next sweep."""
        if self.staleness(parent) is not None:
            return True
        if parent.state in FINAL_STATES or parent.last_seen is None or not self.silence_counts:
            return False  # finished, or never heard: its silence says nothing about the node
        child_since = child.last_seen if child.last_seen is not None else child.registered_at
        return parent.last_seen <= child_since + self.interval


# -- what a failed poll does -----------------------------------------------------------------


def contact_verdict(
    state: State,
    state_since: datetime,
    *,
    has_status_url: bool,
    failures: int,
    now: datetime,
    settings: Settings,
) -> State | None:
    """After a failed poll that counts (`Judge.silence_counts`): UNREACHABLE after
    STATUSD_UNREACHABLE_AFTER failures in a row (at once without a status_url), LOST after
    STATUSD_LOST_AFTER seconds UNREACHABLE, or nothing yet."""
    if state is State.UNREACHABLE:
        since = (now - state_since).total_seconds()
        return State.LOST if since >= settings.lost_after else None
    if state in CONTACT_STATES:
        return None
    if not has_status_url or failures >= settings.unreachable_after:
        return State.UNREACHABLE
    return None


def unreachable_repoll_s(settings: Settings) -> float:
    """How often a workload already UNREACHABLE is polled: a tenth of STATUSD_LOST_AFTER (at most
    a minute, at least one sweep interval). It still recovers at once on a heartbeat; a poll only
    matters for recovery without heartbeats, and the LOST deadline caps each wait."""
    return max(settings.sweep_interval, min(60.0, settings.lost_after / 10))


def repoll_after(unreachable_since: datetime, now: datetime, settings: Settings) -> float:
    """Seconds until the next poll of a workload UNREACHABLE since then: `unreachable_repoll_s`,
    but never later than the moment it becomes due for LOST, so LOST is never delayed."""
    lost_due = settings.lost_after - (now - unreachable_since).total_seconds()
    return max(0.0, min(unreachable_repoll_s(settings), lost_due))


# -- the fleet at once -----------------------------------------------------------------------


def fleet_suspect(stale: int, tracked: int, *, fraction: float, minimum: int) -> bool:
    """Disruption mode's rule: more than `fraction` of the tracked workloads silent at once (and
    at least `minimum`) is more likely our fault or the network's than theirs."""
    return tracked > 0 and stale >= minimum and stale > fraction * tracked
