"""Silence is judged only over time during which ingest was listening, and a paced workload is
never stale for obeying its `next_heartbeat_s`.

Pure rules (statusd.staleness) without I/O; the listening beat script
and the 202's `next_heartbeat_s` against real Redis and the real ingest app, both databases.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from redis.asyncio import Redis

from statusd.hearing import (
    LISTEN_BEAT_S,
    LISTEN_GAP_S,
    Hearing,
    ListeningBeat,
    Pace,
    paced_interval,
    read_hearing,
)
from statusd.keys import Keys
from statusd.lifecycle import State
from statusd.settings import Settings
from statusd.staleness import (
    Facts,
    Judge,
    StaleReason,
    deaf_until,
    heard_until,
    silence_allowed,
)
from tests.support.api_client import api_client
from tests.support.ingest_flow import register, send, wait_for

NOW = 1_000_000.0


def reason(judge: Judge, state: State, seen: float | None, registered: float) -> object:
    stale = judge.staleness(Facts(state, seen, registered))
    return None if stale is None else stale.reason


def test_nothing_is_stale_by_silence_while_deaf() -> None:
    def judge(deaf: float | None = None) -> Judge:
        return Judge(allowed=30, start_timeout=120, now=NOW, deaf_until=deaf)

    assert reason(judge(), State.RUNNING, NOW - 100, NOW - 500) is StaleReason.STALE
    assert reason(judge(NOW + 1), State.RUNNING, NOW - 100, NOW - 500) is None
    assert reason(judge(math.inf), State.PENDING, None, NOW - 500) is None
    # From deaf_until on, the ordinary rule again.
    assert reason(judge(NOW), State.RUNNING, NOW - 100, NOW - 500) is not None
    # UNREACHABLE / LOST are no contact by definition, deaf or not; finals never stale.
    assert reason(judge(math.inf), State.LOST, None, NOW) is StaleReason.LOST
    assert reason(judge(), State.SUCCEEDED, NOW - 900, NOW - 900) is None


def test_silence_is_counted_only_up_to_the_last_listening_beat() -> None:
    # Silent 5 s, but ingest stopped listening 3 s ago: 2 s of silence we could have heard.
    def judge(heard: float | None = None) -> Judge:
        return Judge(allowed=3, start_timeout=120, now=NOW, heard_until=heard)

    assert reason(judge(), State.RUNNING, NOW - 5, NOW - 500) is StaleReason.STALE
    assert reason(judge(NOW - 3), State.RUNNING, NOW - 5, NOW - 500) is None
    assert reason(judge(NOW - 1), State.RUNNING, NOW - 5, NOW - 500) is not None
    assert heard_until(Hearing(NOW - 10, 0.0, 1)) == NOW - 10 + LISTEN_BEAT_S


def test_an_excuse_gives_a_full_allowance_from_its_end() -> None:
    judge = Judge(allowed=30, start_timeout=120, now=NOW)
    silent_long = Facts(State.RUNNING, NOW - 100, NOW - 500)
    assert judge.staleness(silent_long) is not None
    # Excused (maintenance, a quiet period) until 10 s ago: 10 s of silence count, not 100.
    assert judge.staleness(Facts(State.RUNNING, NOW - 100, NOW - 500, quiet_until=NOW - 10)) is None
    # Still excused: nothing counts yet.
    assert judge.staleness(Facts(State.PENDING, None, NOW - 500, quiet_until=NOW + 60)) is None
    ended_long_ago = Facts(State.RUNNING, NOW - 100, NOW - 500, quiet_until=NOW - 31)
    stale = judge.staleness(ended_long_ago)
    assert stale is not None and stale.silent_since == NOW - 31


def test_deaf_until_follows_the_listening_record(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(heartbeat_ttl=30)  # startup grace defaults to the TTL
    assert deaf_until(Hearing(None, 0.0, 5), settings, NOW) is None  # no ingest ever here
    listening = Hearing(last_beat=NOW - 1, listening_since=NOW - 10, tracked=5)
    assert deaf_until(listening, settings, NOW) == NOW + 20
    down = Hearing(last_beat=NOW - LISTEN_GAP_S - 1, listening_since=NOW - 999, tracked=5)
    assert deaf_until(down, settings, NOW) == math.inf
    graced = make_settings(heartbeat_ttl=30, startup_grace=5)
    assert deaf_until(listening, graced, NOW) is not None
    assert deaf_until(listening, graced, NOW) == NOW - 5


def test_paced_interval_keeps_the_fleet_under_the_cap(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(heartbeat_ttl=30, max_heartbeats_per_s=500)
    assert paced_interval(100, settings) == 10.0  # small fleet: TTL / 3
    assert paced_interval(10_000, settings) == 20.0  # 10,000 / 500 per second
    assert 10_001 / paced_interval(10_001, settings) <= 500
    assert silence_allowed(100, settings) == 30.0  # unpaced: exactly the TTL
    assert silence_allowed(10_000, settings) == 40.0  # told 20 s, plus the same 20 s grace


async def test_the_listening_beat_marks_outages(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings()
    keys = Keys(settings.redis_prefix)
    one, two = (
        ListeningBeat(redis, keys, Pace(settings)),
        ListeningBeat(redis, keys, Pace(settings)),
    )
    await one.beat(NOW)  # the first ingest ever on this Redis: nothing to excuse
    assert (await read_hearing(redis, keys)).listening_since == 0.0
    await two.beat(NOW + 1)
    await one.beat(NOW + 2)
    assert (await read_hearing(redis, keys)).listening_since == 0.0
    heard = await read_hearing(redis, keys)
    assert heard.last_beat == NOW + 2
    assert deaf_until(heard, settings, NOW + 2 + LISTEN_GAP_S + 1) == math.inf  # nobody beating
    await two.beat(NOW + 60)  # back after an outage: a new listening spell starts
    heard = await read_hearing(redis, keys)
    assert heard.listening_since == NOW + 60
    assert deaf_until(heard, settings, NOW + 61) == NOW + 60 + settings.heartbeat_ttl
    assert await redis.zcard(keys.ingest_listening) == 2  # stopped processes are remembered


async def test_accepted_heartbeats_say_when_to_send_the_next(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    # 12 tracked workloads at most 1 heartbeat/s in aggregate: every one is told 12 s (> TTL / 3).
    settings = make_settings(heartbeat_ttl=9, max_heartbeats_per_s=1)
    async with api_client(settings) as client:
        tokens = {f"w{n}": await register(client, f"w{n}", "training") for n in range(12)}

        async def told() -> float:
            status, body = await send(client, "/v1/heartbeats", tokens["w0"], "w0", "RUNNING", 1)
            assert status == 202, body
            return float(body["next_heartbeat_s"])

        async def paced() -> bool:
            return await told() == 12.0

        await wait_for(paced, timeout=30, what="the pace refreshed from the fleet size")
        resp = await client.post(
            "/v1/heartbeats:batch",
            json={
                "items": [
                    {"token": tokens["w1"], "workload_id": "w1", "status": "RUNNING", "seq": 1},
                    {"token": tokens["w1"], "workload_id": "w2", "status": "RUNNING", "seq": 1},
                ]
            },
        )
        body = await resp.json()
        assert body["results"][0] == {"status": 202, "next_heartbeat_s": 12.0}
        assert body["results"][1]["status"] == 403 and "next_heartbeat_s" not in body["results"][1]
