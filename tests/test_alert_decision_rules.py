"""The alert decision (statusd.alerting) and the disruption rule as pure functions: which event a
transition raises, how flapping is derived from flap times, when a fleet counts as disrupted."""

from __future__ import annotations

import pytest

from statusd.alerting import AlertEvent, FlapPolicy, alert_event, contact_event, flapping, is_flap
from statusd.lifecycle import State
from statusd.staleness import fleet_suspect

POLICY = FlapPolicy(max_flaps=3, window_s=600.0)
U, L, R = State.UNREACHABLE, State.LOST, State.RUNNING


def decide(frm: State, to: State, at: float, flaps: list[float], silenced: bool = False) -> object:
    return alert_event(frm, to, at=at, silenced=silenced, earlier_flaps=flaps, policy=POLICY)


def test_undamped_events_per_incident() -> None:
    assert contact_event(R, U) is AlertEvent.UNREACHABLE
    assert contact_event(U, L) is AlertEvent.LOST
    assert contact_event(U, R) is AlertEvent.RECOVERED
    assert contact_event(L, R) is AlertEvent.RECOVERED
    assert contact_event(R, State.STOPPING) is None
    assert is_flap(U, R) and not is_flap(L, R) and not is_flap(U, L)


def test_flapping_needs_more_than_max_flaps_within_one_window() -> None:
    assert not flapping([0, 100, 200], 250, POLICY)  # three: not more than three
    assert flapping([0, 100, 200, 300], 300, POLICY)  # the fourth within 600 s
    assert not flapping([0, 300, 650, 990], 990, POLICY)  # never four inside one window
    # The flag holds while the burst's last flap is within a window, then clears by itself.
    assert flapping([0, 100, 200, 300], 899, POLICY)
    assert not flapping([0, 100, 200, 300], 901, POLICY)


def test_one_flapping_alert_then_silence_until_quiet() -> None:
    flaps: list[float] = []
    events = []
    t = 0.0
    for _ in range(6):
        events.append(decide(R, U, t + 1, flaps))
        events.append(decide(U, R, t + 2, flaps))
        flaps.append(t + 2)
        t += 10
    assert events[:7] == [AlertEvent.UNREACHABLE, AlertEvent.RECOVERED] * 3 + [
        AlertEvent.UNREACHABLE
    ]
    assert events[7] is AlertEvent.FLAPPING
    assert events[8:] == [None] * 4
    # LOST is an outage, never damped; nor is the recovery from it.
    assert decide(U, L, t, flaps) is AlertEvent.LOST
    assert decide(L, R, t + 1, flaps) is AlertEvent.RECOVERED
    # A quiet window later, the next incident alerts normally again.
    assert decide(R, U, t + 700, flaps) is AlertEvent.UNREACHABLE


def test_silenced_raises_nothing_at_all() -> None:
    for frm, to in ((R, U), (U, L), (U, R), (L, R)):
        assert decide(frm, to, 5, [], silenced=True) is None


@pytest.mark.parametrize(
    ("stale", "tracked", "expected"),
    [
        (120, 200, True),  # 60 %
        (100, 200, False),  # exactly half is not more than half
        (19, 30, False),  # under STATUSD_DISRUPTION_MIN
        (20, 30, True),
        (10, 200, False),  # 5 %: a normal failure
        (0, 0, False),
    ],
)
def test_disruption_rule(stale: int, tracked: int, expected: bool) -> None:
    assert fleet_suspect(stale, tracked, fraction=0.5, minimum=20) is expected
