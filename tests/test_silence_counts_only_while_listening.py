"""Silence is judged only over time during which ingest was listening, and a paced workload is
never stale for obeying its `next_heartbeat_s`.

Pure rules (statusd.liveness.staleness, statusd.hearing) without I/O; the listening beat script
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
    silence_ttl,
)
from statusd.keys import Keys
from statusd.lifecycle import State
from statusd.liveness import StaleReason, staleness
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_flow import register, send, wait_for

NOW = 1_000_000.0


def test_nothing_is_stale_by_silence_while_deaf() -> None:
    silent = dict(heartbeat_ttl=30, start_timeout=120, now=NOW)
    assert staleness(State.RUNNING, NOW - 100, NOW - 500, **silent) is StaleReason.STALE
    assert staleness(State.RUNNING, NOW - 100, NOW - 500, deaf_until=NOW + 1, **silent) is None
    assert staleness(State.PENDING, None, NOW - 500, deaf_until=math.inf, **silent) is None
    # From deaf_until on, the ordinary rule again.
    assert staleness(State.RUNNING, NOW - 100, NOW - 500, deaf_until=NOW, **silent) is not None
    # UNREACHABLE / LOST are no contact by definition, deaf or not; finals never stale.
    assert staleness(State.LOST, None, NOW, deaf_until=math.inf, **silent) is StaleReason.LOST
    assert staleness(State.SUCCEEDED, NOW - 900, NOW - 900, **silent) is None


def test_silence_is_counted_only_up_to_the_last_listening_beat() -> None:
    # Silent 5 s, but ingest stopped listening 3 s ago: 2 s of silence we could have heard.
    rule = dict(heartbeat_ttl=3, start_timeout=120, now=NOW)
    assert staleness(State.RUNNING, NOW - 5, NOW - 500, **rule) is StaleReason.STALE
    assert staleness(State.RUNNING, NOW - 5, NOW - 500, heard_until=NOW - 3, **rule) is None
    assert staleness(State.RUNNING, NOW - 5, NOW - 500, heard_until=NOW - 1, **rule) is not None
    assert Hearing(NOW - 10, 0.0, 1).heard_until == NOW - 10 + LISTEN_BEAT_S


def test_deaf_until_follows_the_listening_record(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(heartbeat_ttl=30)  # startup grace defaults to the TTL
    assert Hearing(None, 0.0, 5).deaf_until(settings, NOW) is None  # no ingest ever here
    listening = Hearing(last_beat=NOW - 1, listening_since=NOW - 10, tracked=5)
    assert listening.deaf_until(settings, NOW) == NOW + 20
    down = Hearing(last_beat=NOW - LISTEN_GAP_S - 1, listening_since=NOW - 999, tracked=5)
    assert down.deaf_until(settings, NOW) == math.inf
    graced = make_settings(heartbeat_ttl=30, startup_grace=5)
    assert listening.deaf_until(graced, NOW) is not None
    assert listening.deaf_until(graced, NOW) == NOW - 5


def test_paced_interval_keeps_the_fleet_under_the_cap(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(heartbeat_ttl=30, max_heartbeats_per_s=500)
    assert paced_interval(100, settings) == 10.0  # small fleet: TTL / 3
    assert paced_interval(10_000, settings) == 20.0  # 10,000 / 500 per second
    assert 10_001 / paced_interval(10_001, settings) <= 500
    assert silence_ttl(100, settings) == 30.0  # unpaced: exactly the TTL
    assert silence_ttl(10_000, settings) == 40.0  # told 20 s, plus the same 20 s grace


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
    assert heard.deaf_until(settings, NOW + 2 + LISTEN_GAP_S + 1) == math.inf  # nobody beating
    await two.beat(NOW + 60)  # back after an outage: a new listening spell starts
    heard = await read_hearing(redis, keys)
    assert heard.listening_since == NOW + 60
    assert heard.deaf_until(settings, NOW + 61) == NOW + 60 + settings.heartbeat_ttl
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
