"""Maintenance windows and announced quiet periods, judged by statusd.staleness with the clock
advanced by hand (no real waits, no cron ticks awaited).

- A recurring window, every 2 minutes for 30 s in Asia/Kolkata (+05:30): a workload silent inside
  it is not stale; after its end it gets a full allowance; silent beyond end + allowance it is.
- Occurrences follow local time across a DST change (Europe/Berlin), and a window excuses nothing
  before it was created.
- `quiet_for_s: 120` (the deadline ingest writes: heard + 120) keeps a silent workload fine for
  120 s plus its allowance and not a moment longer: by the rule, and through the real ingest
  script and the sweeper's range query on a real Redis.
- The alert decision raises nothing for a workload in maintenance, and resumes after it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from statusd import liveness
from statusd.alerting import AlertEvent, FlapPolicy, alert_event
from statusd.ingest.heartbeat_checks import CheckedHeartbeat
from statusd.ingest.writer import StreamWriter
from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.maintenance import Excuses, MaintenanceRecord, Recurrence
from statusd.silences import Matcher
from statusd.staleness import Facts, Judge, StaleReason
from statusd.sweeper.sweep import stale_candidates

KOLKATA = ZoneInfo("Asia/Kolkata")
TTL = 30.0
# 16:00:00 in Kolkata is 10:30:00 UTC: the +05:30 offset puts occurrences on half hours in UTC.
CREATED = datetime(2026, 12, 7, 15, 59, 0, tzinfo=KOLKATA)
WINDOW_START = datetime(2026, 12, 7, 16, 0, 0, tzinfo=KOLKATA)
LABELS = {"team": "vision"}


def every_two_minutes() -> MaintenanceRecord:
    return MaintenanceRecord(
        id="m1",
        match=Matcher(label=("team", "vision")),
        reason="nightly upgrade",
        created_at=CREATED.astimezone(UTC),
        recurrence=Recurrence("*/2 * * * *", 30, "Asia/Kolkata"),
    )


def judged(at: datetime, last_seen: float, window: MaintenanceRecord) -> StaleReason | None:
    """The sweeper's per-workload answer at `at`: the window's excuse, evaluated then."""
    excuses = Excuses.of([window], at)
    facts = Facts(
        State.RUNNING,
        last_seen,
        last_seen,
        quiet_until=excuses.until("w", Kind.TRAINING, LABELS),
    )
    stale = Judge(allowed=TTL, start_timeout=TTL, now=at.timestamp()).silent(facts)
    return stale.reason if stale is not None else None


def test_a_recurring_window_in_kolkata_starts_on_local_minutes() -> None:
    window = every_two_minutes()
    at = WINDOW_START + timedelta(seconds=10)
    assert window.latest(at) == (
        WINDOW_START.astimezone(UTC),
        WINDOW_START.astimezone(UTC) + timedelta(seconds=30),
    )
    assert WINDOW_START.astimezone(UTC) == datetime(2026, 12, 7, 10, 30, tzinfo=UTC)
    assert window.active(at)
    assert not window.active(WINDOW_START + timedelta(seconds=30))  # the end is excluded
    assert window.active(WINDOW_START + timedelta(minutes=2, seconds=5))  # the next occurrence
    nxt = window.current_or_next(WINDOW_START + timedelta(seconds=45))
    assert nxt is not None and nxt[0] == (WINDOW_START + timedelta(minutes=2)).astimezone(UTC)


def test_silent_inside_the_window_is_fine_and_after_end_plus_allowance_stale() -> None:
    window = every_two_minutes()
    # Last heard 20 s before the window: without it, stale at WINDOW_START + 10 s.
    seen = (WINDOW_START - timedelta(seconds=20)).timestamp()
    outside = MaintenanceRecord(
        "m2", Matcher(label=("team", "nlp")), "x", window.created_at, recurrence=window.recurrence
    )
    assert judged(WINDOW_START + timedelta(seconds=11), seen, outside) is StaleReason.STALE
    for second in (0, 11, 29):
        assert judged(WINDOW_START + timedelta(seconds=second), seen, window) is None
    end = WINDOW_START + timedelta(seconds=30)
    # After the end, silence counts from the end: a full TTL of grace, not a moment more.
    assert judged(end + timedelta(seconds=TTL), seen, window) is None
    assert judged(end + timedelta(seconds=TTL + 0.001), seen, window) is StaleReason.STALE
    # The next occurrence excuses it again (a workload under a recurring window is silent in
    # every occurrence; only between them, past the allowance, is it stale).
    assert judged(WINDOW_START + timedelta(minutes=2, seconds=1), seen, window) is None


def test_a_window_excuses_nothing_before_it_was_created() -> None:
    window = every_two_minutes()
    created_late = MaintenanceRecord(
        "m3",
        window.match,
        "x",
        (WINDOW_START + timedelta(seconds=40)).astimezone(UTC),
        recurrence=window.recurrence,
    )
    seen = (WINDOW_START - timedelta(seconds=20)).timestamp()
    # The 16:00 occurrence ended before the window existed: no retroactive grace.
    assert judged(WINDOW_START + timedelta(seconds=50), seen, created_late) is StaleReason.STALE
    start = WINDOW_START.astimezone(UTC)
    assert created_late.spans(start, start + timedelta(minutes=5)) == [
        (start + timedelta(minutes=2), start + timedelta(minutes=2, seconds=30)),
        (start + timedelta(minutes=4), start + timedelta(minutes=4, seconds=30)),
    ]


def test_occurrences_keep_local_time_across_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    nightly = MaintenanceRecord(
        "m4",
        Matcher(kind=Kind.DEPLOYMENT),
        "backup",
        datetime(2026, 3, 1, tzinfo=UTC),
        recurrence=Recurrence("30 3 * * *", 600, "Europe/Berlin"),
    )
    before = nightly.latest(datetime(2026, 3, 28, 12, tzinfo=UTC))
    after = nightly.latest(datetime(2026, 3, 29, 12, tzinfo=UTC))  # CEST from 29 March
    assert before is not None and after is not None
    assert before[0].astimezone(berlin).hour == after[0].astimezone(berlin).hour == 3
    assert before[0].hour == 2 and after[0].hour == 1  # in UTC the start moved by the offset


def test_quiet_for_120_keeps_a_silent_workload_fine_for_120_s_and_not_longer() -> None:
    heard = 1_800_000_000.0
    deadline = heard + 120  # the last_seen score ingest writes for `"quiet_for_s": 120`
    judge_at = lambda now: Judge(allowed=TTL, start_timeout=TTL, now=now)  # noqa: E731
    # Without the quiet period it would be stale one TTL after it was heard.
    assert judge_at(heard + TTL + 1).silent(Facts(State.RUNNING, heard, heard)) is not None
    for later in (TTL + 1, 60, 120, 120 + TTL):
        assert judge_at(heard + later).silent(Facts(State.RUNNING, deadline, heard)) is None
        # The same answer from the announced period as a per-workload excuse.
        excused = Facts(State.RUNNING, heard, heard, quiet_until=deadline)
        assert judge_at(heard + later).silent(excused) is None
    stale = judge_at(heard + 120 + TTL + 0.001).silent(Facts(State.RUNNING, deadline, heard))
    assert stale is not None and stale.silent_since == deadline


def test_no_alert_inside_a_window_and_alerts_again_after_it() -> None:
    window = every_two_minutes()
    policy = FlapPolicy()

    def event(at: datetime) -> AlertEvent | None:
        return alert_event(
            State.RUNNING,
            State.UNREACHABLE,
            at=at.timestamp(),
            silenced=False,
            earlier_flaps=[],
            policy=policy,
            in_maintenance=Excuses.of([window], at).covers("w", Kind.TRAINING, LABELS),
        )

    assert event(WINDOW_START + timedelta(seconds=5)) is None
    assert event(WINDOW_START + timedelta(seconds=31)) is AlertEvent.UNREACHABLE
    other_team = Excuses.of([window], WINDOW_START).covers("w", Kind.TRAINING, {"team": "nlp"})
    assert other_team is False


async def test_quiet_for_120_through_real_ingest_and_the_sweepers_query(
    redis: Redis, redis_prefix: str
) -> None:
    """The same 120 s through the real ingest script and the sweeper's range query on a real
    Redis, the clock advanced by hand: found only past 120 s plus the allowance."""
    keys = Keys(redis_prefix, shards=4)
    await liveness.on_registered(redis, keys, "w-quiet", time.time(), generation=1)
    await liveness.on_registered(redis, keys, "w-plain", time.time(), generation=1)
    writer = StreamWriter(redis, keys, shards=keys.shards, timeout=10)
    before = time.time()
    await writer.append(
        [
            CheckedHeartbeat("w-quiet", "RUNNING", 1, "checkpoint", 1, quiet_for_s=120),
            CheckedHeartbeat("w-plain", "RUNNING", 1, None, 1),
        ]
    )
    after = time.time()
    await writer.close()

    async def found(now: float) -> set[str]:
        judge = Judge(allowed=TTL, start_timeout=TTL, now=now)
        return {c.id for c in await stale_candidates(redis, keys, judge)}

    assert await found(after + TTL + 1) == {"w-plain"}  # the plain one is due after a TTL
    assert await found(before + 60) == {"w-plain"}
    assert await found(before + 120 + TTL) == {"w-plain"}  # not before 120 s + the allowance
    assert await found(after + 120 + TTL + 0.01) == {"w-plain", "w-quiet"}  # and not longer
