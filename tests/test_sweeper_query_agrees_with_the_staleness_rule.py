"""The sweeper's Redis range queries find exactly the workloads the per-workload rule calls silent.

Both come from statusd.staleness: the queries read the liveness sorted sets of a real Redis with
`Judge.cutoffs()`, the per-workload answer is `Judge.silent`. Hypothesis picks the scores (on
both sides of the cutoffs, to the last bit of a double), the allowance, `now` and the moment ingest
last listened; the two must agree on every workload, and an excused workload is never polled.
They still agree with maintenance windows and announced quiet periods in play: a quiet period is
in the score itself (ingest moved the deadline), a window is the per-workload answer's excuse.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.lifecycle import Kind, State
from statusd.maintenance import Excuses
from statusd.silences import Matcher
from statusd.staleness import Facts, Judge
from statusd.sweeper.sweep import PullFacts, due, stale_candidates

NOW = 1_800_000_000.0


@st.composite
def judges(draw: st.DrawFn) -> Judge:
    allowed = draw(st.floats(min_value=0.5, max_value=600, allow_nan=False))
    start_timeout = draw(st.floats(min_value=0.5, max_value=600, allow_nan=False))
    heard = draw(st.none() | st.floats(min_value=NOW - 900, max_value=NOW + 5))
    return Judge(allowed=allowed, start_timeout=start_timeout, now=NOW, heard_until=heard)


def near(judge: Judge) -> st.SearchStrategy[float]:
    """Scores around the cutoffs (exactly on them, one ulp either side) and anywhere else."""
    cut = judge.cutoffs()
    edges = [
        value
        for c in (cut.last_seen_before, cut.pending_before)
        for value in (c, math.nextafter(c, -math.inf), math.nextafter(c, math.inf))
    ]
    return st.sampled_from(edges) | st.floats(min_value=NOW - 1500, max_value=NOW + 10)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[Judge, dict[str, Facts]]:
    judge = draw(judges())
    fleet: dict[str, Facts] = {}
    for n in range(draw(st.integers(min_value=0, max_value=25))):
        registered = draw(near(judge))
        seen = draw(st.none() | near(judge))
        fleet[f"w{n}"] = Facts(State.RUNNING, seen, registered)
    return judge, fleet


async def _swept(redis_url: str, judge: Judge, fleet: dict[str, Facts]) -> set[str]:
    """Record the fleet as ingest and registration do, then run the sweeper's queries."""
    keys = Keys(f"t{uuid.uuid4().hex[:10]}:", shards=4)
    redis = Redis.from_url(redis_url)
    try:
        for wid, facts in fleet.items():
            await redis.zadd(keys.pending_since(keys.shard(wid)), {wid: facts.registered_at})
            if facts.last_seen is not None:
                await redis.zadd(keys.last_seen(keys.shard(wid)), {wid: facts.last_seen})
        return {c.id for c in await stale_candidates(redis, keys, judge)}
    finally:
        async for key in redis.scan_iter(match=f"{keys.prefix}*", count=1000):
            await redis.delete(key)
        await redis.aclose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=fleets())
def test_range_queries_find_exactly_the_silent_workloads(
    redis_server: str, case: tuple[Judge, dict[str, Facts]]
) -> None:
    judge, fleet = case
    expected = {wid for wid, facts in fleet.items() if judge.silent(facts) is not None}
    assert asyncio.run(_swept(redis_server, judge, fleet)) == expected


@given(
    judge=judges(), seen=st.floats(min_value=NOW - 1500, max_value=NOW), excused=st.floats(0, 900)
)
def test_an_excused_workload_is_a_candidate_at_most(
    judge: Judge, seen: float, excused: float
) -> None:
    """The queries know no excuse: the per-workload answer may only narrow what they find."""
    plain = Facts(State.RUNNING, seen, seen)
    quiet = Facts(State.RUNNING, seen, seen, quiet_until=seen + excused)
    if judge.silent(quiet) is not None:
        assert judge.silent(plain) is not None
    if judge.counted_until < seen + excused:
        assert judge.silent(quiet) is None  # still excused


# -- with maintenance windows and announced quiet periods in play ----------------------------


@st.composite
def excused_fleets(
    draw: st.DrawFn,
) -> tuple[Judge, dict[str, tuple[Facts, float]], Excuses]:
    """A fleet where some workloads announced a quiet period (ingest wrote heard + N as their
    score) and some are covered by a maintenance window that ended (or ends) around now."""
    judge = draw(judges())
    fleet: dict[str, tuple[Facts, float]] = {}
    ends: list[tuple[Matcher, float]] = []
    for n in range(draw(st.integers(min_value=0, max_value=20))):
        wid = f"w{n}"
        registered = draw(near(judge))
        seen = draw(st.none() | near(judge))
        quiet = draw(st.sampled_from([0, 0, 1, 30, 120, 3600]))
        score = seen + quiet if seen is not None else registered
        announced = seen + quiet if seen is not None and quiet else None
        window_end = draw(st.none() | near(judge) | st.floats(NOW - 600, NOW + 600))
        if window_end is not None:
            ends.append((Matcher(workload_id=wid), window_end))
        excuse = max((t for t in (announced, window_end) if t is not None), default=None)
        fleet[wid] = (Facts(State.RUNNING, seen, registered, quiet_until=excuse), score)
    return judge, fleet, Excuses(NOW, tuple(ends))


async def _swept_and_due(
    redis_url: str, judge: Judge, fleet: dict[str, tuple[Facts, float]], excuses: Excuses
) -> set[str]:
    """Ingest's scores in Redis, the sweeper's queries, then its per-workload answer."""
    keys = Keys(f"t{uuid.uuid4().hex[:10]}:", shards=4)
    redis = Redis.from_url(redis_url)
    try:
        for wid, (facts, score) in fleet.items():
            await redis.zadd(keys.pending_since(keys.shard(wid)), {wid: facts.registered_at})
            if facts.last_seen is not None:
                await redis.zadd(keys.last_seen(keys.shard(wid)), {wid: score})
        candidates = await stale_candidates(redis, keys, judge)
    finally:
        async for key in redis.scan_iter(match=f"{keys.prefix}*", count=1000):
            await redis.delete(key)
        await redis.aclose()
    changed = datetime.fromtimestamp(NOW - 10_000, UTC)
    return {
        c.id
        for c in candidates
        if due(
            judge,
            c,
            PullFacts(c.id, Kind.TRAINING, State.RUNNING, None, 0, changed, False),
            excuses,
        )
    }


NEVER_SEEN_AFTER_A_WINDOW = (
    Judge(allowed=5, start_timeout=300, now=NOW),
    # Registered 100 s ago, never heard, a window over 50 s ago: its start timeout counts again
    # from the window's end, so it is not stale (and the query, cut at 300 s, does not find it).
    {"p": (Facts(State.PENDING, None, NOW - 100, quiet_until=NOW - 50), NOW - 100)},
    Excuses(NOW, ((Matcher(workload_id="p"), NOW - 50),)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(case=NEVER_SEEN_AFTER_A_WINDOW)
@given(case=excused_fleets())
def test_sweeper_and_rule_agree_with_maintenance_and_quiet_periods(
    redis_server: str, case: tuple[Judge, dict[str, tuple[Facts, float]], Excuses]
) -> None:
    judge, fleet, excuses = case
    expected = {wid for wid, (facts, _) in fleet.items() if judge.silent(facts) is not None}
    assert asyncio.run(_swept_and_due(redis_server, judge, fleet, excuses)) == expected
