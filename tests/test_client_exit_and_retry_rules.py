"""statusd-client's pure rules, no I/O: what is reported on exit and SIGTERM, how long to wait
before the next heartbeat, how Retry-After is read, and that seq only ever grows."""

from __future__ import annotations

import email.utils
import itertools
import time

import pytest
from statusd_client import next_seq
from statusd_client.core import exit_report, sigterm_report
from statusd_client.policy import MAX_DELAY_S, MIN_DELAY_S, Schedule
from statusd_client.transport import Accepted, Report, Transient, parse_retry_after

RUNNING = Report("RUNNING", "epoch 3")
DONE = Report("SUCCEEDED")


@pytest.mark.parametrize(
    ("current", "exc", "expected"),
    [
        (None, RuntimeError("x"), None),  # nothing was ever set: nothing to report
        (DONE, RuntimeError("x"), DONE),  # a final state the workload set always wins
        (RUNNING, None, RUNNING),  # a clean exit repeats the last report
        (RUNNING, SystemExit(0), RUNNING),
        (RUNNING, ValueError("bad batch"), Report("FAILED", "ValueError: bad batch")),
        (RUNNING, KeyboardInterrupt(), Report("STOPPED", "interrupted (KeyboardInterrupt)")),
        (RUNNING, SystemExit(3), Report("STOPPED", "interrupted (SystemExit)")),
    ],
)
def test_exit_report(current: Report | None, exc: BaseException | None, expected: Report) -> None:
    assert exit_report(current, exc, "FAILED", "STOPPED") == expected


def test_exit_report_can_be_told_to_keep_the_last_state() -> None:
    assert exit_report(RUNNING, ValueError("x"), None, None) == RUNNING
    assert exit_report(RUNNING, KeyboardInterrupt(), None, None) == RUNNING


def test_sigterm_turns_a_live_state_into_stopped_and_keeps_a_final_one() -> None:
    assert sigterm_report(RUNNING, "STOPPED") == Report("STOPPED", "terminated by SIGTERM")
    assert sigterm_report(DONE, "STOPPED") == DONE
    assert sigterm_report(None, "STOPPED") is None
    assert sigterm_report(RUNNING, None) == RUNNING


def test_retry_after_as_seconds_or_http_date() -> None:
    assert parse_retry_after("2") == 2.0
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= (parse_retry_after(in_a_minute) or 0) <= 60
    assert parse_retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    for bad in (None, "", "soon", "-1", "1.5"):
        assert parse_retry_after(bad) is None


def test_schedule_follows_next_heartbeat_s_within_bounds() -> None:
    schedule = Schedule(interval_s=5.0)
    assert schedule.after(Accepted(next_heartbeat_s=None)) == 5.0
    assert schedule.after(Accepted(next_heartbeat_s=12.5)) == 12.5
    assert schedule.after(Accepted(next_heartbeat_s=0.0001)) == MIN_DELAY_S  # no busy loop
    assert schedule.after(Accepted(next_heartbeat_s=86400)) == MAX_DELAY_S  # no day of silence


def test_backoff_is_jittered_capped_and_never_below_retry_after() -> None:
    schedule = Schedule(interval_s=5.0, backoff_base_s=0.5, backoff_max_s=30.0)
    delays = [schedule.after(Transient("HTTP 503", None)) for _ in range(40)]
    caps = [min(30.0, 0.5 * 2**n) for n in range(40)]
    assert all(MIN_DELAY_S <= d <= max(MIN_DELAY_S, c) for d, c in zip(delays, caps, strict=True))
    assert len(set(delays)) > 1  # jittered, not lockstep
    assert schedule.after(Transient("HTTP 503", retry_after_s=45.0)) >= 45.0
    assert schedule.after(Accepted(None)) == 5.0 and schedule.failures == 0  # success resets


def test_seq_strictly_increases_and_stays_below_two_to_the_63() -> None:
    seqs = [next_seq() for _ in range(10_000)]
    assert all(b > a for a, b in itertools.pairwise(seqs))
    assert time.time_ns() - 10**9 < seqs[0] and seqs[-1] < 2**63
