"""Which alert (if any) one applied transition raises: the single decision, made inside the
transition's database transaction by statusd.transitions.

Events: `unreachable`, `lost`, `recovered` per incident, as before, with two dampers:
- a silenced workload (statusd.silences) raises nothing while the silence lasts, nor does one
  inside a maintenance window (statusd.maintenance);
- a child whose parent is down (statusd.dependencies decides: `suppressed_by`) raises nothing
  for going unreachable/lost; the alert is held and raised when the parent recovers, if the child
  is still down then. A recovery is held only when the child's own alert never went out (there
  is nothing to resolve); otherwise resolutions always flow;
- a flapping workload raises ONE `flapping` alert (on the recovery that makes it flapping) and then
  nothing for its UNREACHABLE <-> recovered round trips until it has been quiet for a window.
  LOST, and the recovery from LOST, are never damped: staying unreachable for STATUSD_LOST_AFTER
  is a real outage, flapping or not.

"Flapping" is derived from the transition history (the database, so it survives Redis data loss):
a *flap* is a recovery from UNREACHABLE; a workload is flapping at time t when some flap within
the last STATUSD_FLAP_WINDOW seconds ended a burst of more than STATUSD_FLAP_MAX flaps inside one
window. So the flag appears on the (FLAP_MAX + 1)-th flap within a window and clears once a whole
window passes without such a burst.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from statusd.lifecycle import CONTACT_STATES, State


class AlertEvent(StrEnum):
    UNREACHABLE = "unreachable"
    LOST = "lost"
    RECOVERED = "recovered"
    FLAPPING = "flapping"
    DISRUPTION = "disruption"  # statusd suspects itself or the network (statusd.sweeper.disruption)
    DISRUPTION_OVER = "disruption_over"


@dataclass(frozen=True, slots=True)
class FlapPolicy:
    max_flaps: int = 3  # STATUSD_FLAP_MAX
    window_s: float = 600.0  # STATUSD_FLAP_WINDOW

    @property
    def lookback_s(self) -> float:
        """How much history the rule needs: a burst may start a window before its last flap."""
        return 2 * self.window_s


def is_flap(from_state: State, to_state: State) -> bool:
    """A recovery from UNREACHABLE (LOST is an outage, not a flap)."""
    return from_state is State.UNREACHABLE and to_state not in CONTACT_STATES


def flapping(flaps: Sequence[float], now: float, policy: FlapPolicy) -> bool:
    """True when some flap in the last window ended a burst of more than max_flaps in a window."""
    ordered = sorted(flaps)
    for index, end in enumerate(ordered):
        if now - end > policy.window_s or end > now:
            continue
        burst = sum(1 for start in ordered[: index + 1] if end - start < policy.window_s)
        if burst > policy.max_flaps:
            return True
    return False


def contact_event(from_state: State, to_state: State) -> AlertEvent | None:
    """The undamped event: entering UNREACHABLE / LOST, or recovering from either."""
    if to_state in CONTACT_STATES and from_state != to_state:
        return AlertEvent(to_state.value.lower())
    if from_state in CONTACT_STATES and to_state not in CONTACT_STATES:
        return AlertEvent.RECOVERED
    return None


def alert_event(
    from_state: State,
    to_state: State,
    *,
    at: float,
    silenced: bool,
    earlier_flaps: Sequence[float],
    policy: FlapPolicy,
    suppressed_by: str | None = None,
    in_maintenance: bool = False,
) -> AlertEvent | None:
    """The alert this transition raises (at unix time `at`), or None.

    `earlier_flaps`: times of this workload's (current generation's) flaps before this one.
    `suppressed_by`: the parent holding this transition's alert (statusd.dependencies), if any."""
    event = contact_event(from_state, to_state)
    if event is None or silenced or in_maintenance or suppressed_by is not None:
        return None
    if event is AlertEvent.LOST or from_state is State.LOST:
        return event
    if flapping(earlier_flaps, at, policy):
        return None  # damped: its one `flapping` alert already went out
    if is_flap(from_state, to_state) and flapping([*earlier_flaps, at], at, policy):
        return AlertEvent.FLAPPING
    return event
