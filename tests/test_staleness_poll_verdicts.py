"""What a failed poll does, as statusd.staleness rules it (pure, no I/O): UNREACHABLE after
STATUSD_UNREACHABLE_AFTER failures (at once without a status_url), LOST after STATUSD_LOST_AFTER
seconds UNREACHABLE, the back-off of UNREACHABLE workloads capped by the LOST deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from statusd.lifecycle import State
from statusd.settings import Settings
from statusd.staleness import contact_verdict, repoll_after, unreachable_repoll_s
from tests.conftest import TEST_API_TOKEN, TEST_SECRET

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SETTINGS = Settings(
    secret=TEST_SECRET,
    api_token=TEST_API_TOKEN,
    unreachable_after=2,
    lost_after=300.0,
    sweep_interval=5.0,
)


def verdict(state: State, *, ago: float = 0.0, failures: int = 1, url: bool = True) -> State | None:
    return contact_verdict(
        state,
        NOW - timedelta(seconds=ago),
        has_status_url=url,
        failures=failures,
        now=NOW,
        settings=SETTINGS,
    )


def test_failed_polls_convict_only_after_the_threshold() -> None:
    assert verdict(State.RUNNING, failures=1) is None
    assert verdict(State.RUNNING, failures=2) is State.UNREACHABLE
    assert verdict(State.PENDING, failures=1, url=False) is State.UNREACHABLE  # nothing to poll


def test_unreachable_turns_lost_after_lost_after() -> None:
    assert verdict(State.UNREACHABLE, ago=299.0, failures=9) is None
    assert verdict(State.UNREACHABLE, ago=300.0, failures=9) is State.LOST
    assert verdict(State.LOST, ago=9999.0, failures=9) is None  # nothing further


@given(since=st.floats(min_value=0, max_value=1000))
def test_the_back_off_never_delays_lost(since: float) -> None:
    wait = repoll_after(NOW - timedelta(seconds=since), NOW, SETTINGS)
    assert 0.0 <= wait <= unreachable_repoll_s(SETTINGS)
    # Polled again by the LOST deadline (times are datetimes: exact to a microsecond).
    assert since + wait <= max(since, SETTINGS.lost_after) + 1e-6
