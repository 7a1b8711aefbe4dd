"""The lease rule in numbers (pure, no I/O): a lease covers the wait for a first attempt, every
attempt at its full timeout with the backoff sleeps between them (capped by the retry budget),
and the slack; an attempt may start only if it ends LEASE_SLACK before the lease does."""

from __future__ import annotations

import pytest

from statusd.settings import Settings
from statusd.sync.lease import (
    CLAIM_TO_SEND,
    LEASE_SLACK,
    RETRY_INITIAL_WAIT,
    RETRY_JITTER,
    RETRY_MAX_WAIT,
    RowLease,
    backoff_cap,
    lease_seconds,
    retry_sleep,
    send_bound,
)
from tests.conftest import TEST_API_TOKEN, TEST_SECRET


def make_settings(**values: float | int) -> Settings:
    """Only the sync fields matter; nothing is opened."""
    return Settings(
        database_url="sqlite+aiosqlite:///unused.db",
        secret=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        **values,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("timeout", "attempts", "budget", "bound"),
    [
        (5.0, 5, 20.0, 25.0),  # the defaults: the budget caps it (budget + one timeout)
        (1.0, 4, 2.0, 3.0),  # the end-to-end tests' settings
        (1.0, 2, 60.0, 2.0 + backoff_cap(1)),  # few attempts: every attempt and the one sleep
    ],
)
def test_the_send_bound_is_every_attempt_capped_by_the_budget(
    timeout: float, attempts: int, budget: float, bound: float
) -> None:
    settings = make_settings(sync_timeout=timeout, sync_attempts=attempts, sync_budget=budget)
    assert send_bound(settings) == pytest.approx(bound)
    assert lease_seconds(settings) == pytest.approx(
        max(settings.sync_lease, CLAIM_TO_SEND + bound + LEASE_SLACK)
    )


def test_sync_lease_is_only_a_floor() -> None:
    short = make_settings(sync_timeout=1.0, sync_attempts=1, sync_budget=0.5, sync_lease=0.1)
    assert lease_seconds(short) == pytest.approx(CLAIM_TO_SEND + 1.0 + LEASE_SLACK)
    long = make_settings(sync_timeout=1.0, sync_attempts=1, sync_budget=0.5, sync_lease=600.0)
    assert lease_seconds(long) == 600.0


def test_an_attempt_starts_only_if_it_ends_before_the_lease_with_slack() -> None:
    lease = RowLease(deadline=100.0)
    assert lease.may_start(5.0, now=100.0 - 5.0 - LEASE_SLACK)
    assert not lease.may_start(5.0, now=100.0 - 5.0 - LEASE_SLACK + 0.001)
    assert not lease.may_start(5.0, now=101.0)  # lapsed: never
    lease.lost = True
    assert not lease.may_start(5.0, now=0.0)  # no longer ours: never


@pytest.mark.parametrize("attempts", [1025, 1100, 10**6, 10**12])
def test_any_number_of_attempts_has_a_bound(attempts: int) -> None:
    """STATUSD_SYNC_ATTEMPTS has no upper limit: past ~1025 attempts 2.0 ** n overflows a float,
    and a sum over every retry would take as long as the attempts are many."""
    settings = make_settings(sync_timeout=1.0, sync_attempts=attempts, sync_budget=20.0)
    assert send_bound(settings) == pytest.approx(21.0)  # the budget caps it
    assert backoff_cap(attempts) == pytest.approx(RETRY_MAX_WAIT + RETRY_JITTER)
    unbudgeted = make_settings(sync_timeout=1.0, sync_attempts=attempts, sync_budget=1e18)
    assert send_bound(unbudgeted) == pytest.approx(
        attempts * 1.0
        + sum(backoff_cap(r) for r in range(1, 40))
        + (attempts - 40) * (RETRY_MAX_WAIT + RETRY_JITTER)
    )


@pytest.mark.parametrize("retry", [1, 2, 3, 6, 7, 40, 10**6])
def test_a_retry_sleeps_its_exponential_share_and_never_past_its_cap(retry: int) -> None:
    """The sleeps the drain takes are the ones send_bound adds up: never longer than backoff_cap,
    never shorter than the jitter-free exponential (which stops growing at RETRY_MAX_WAIT)."""
    floor = min(RETRY_MAX_WAIT, RETRY_INITIAL_WAIT * 2.0 ** min(retry - 1, 64))
    for _ in range(200):
        assert floor <= retry_sleep(retry) <= backoff_cap(retry)


@pytest.mark.parametrize("retry", [1, 2, 5, 40])
def test_a_retry_at_a_peer_that_is_not_failing_sleeps_the_first_backoff(retry: int) -> None:
    """A row failing at a peer that answers nearly everything else does not double its sleeps."""
    for _ in range(200):
        assert RETRY_INITIAL_WAIT <= retry_sleep(retry, peer_failing=False) <= backoff_cap(1)
