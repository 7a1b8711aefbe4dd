"""Disruption mode's flip on real Redis: of many sweeps judging at once (two beats, two workers),
exactly one sees the mode change and so writes the one alert; the hash is the selfwatch one."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from statusd.alerting import AlertEvent
from statusd.keys import Keys
from statusd.selfwatch import read_disruption
from statusd.sweeper.disruption import Flip, record


async def test_concurrent_judges_flip_once_each_way(redis: Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)

    async def judge(active: bool) -> list[Flip | None]:
        return list(
            await asyncio.gather(*(record(redis, keys, active, 130, 200) for _ in range(20)))
        )

    flips = [f for f in await judge(True) if f is not None]
    assert [f.event for f in flips] == [AlertEvent.DISRUPTION]
    state = await read_disruption(redis, keys)
    assert state.active and state.since is not None and state.fraction == 0.65
    since = state.since

    # Staying in the mode keeps its start and updates the counts; no new flip.
    assert await record(redis, keys, True, 150, 200) is None
    again = await read_disruption(redis, keys)
    assert again.since == since and again.stale == 150

    flips = [f for f in await judge(False) if f is not None]
    assert [f.event for f in flips] == [AlertEvent.DISRUPTION_OVER]
    over = await read_disruption(redis, keys)
    assert not over.active and over.since is None
