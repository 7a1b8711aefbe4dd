"""The self-watch signals round-trip through a real Redis, and the stalled rule reads as documented."""

from __future__ import annotations

from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.selfwatch import (
    DisruptionMode,
    last_sweep_success,
    read_disruption,
    record_sweep_success,
    sweeper_stalled,
    write_disruption,
)


def test_sweeper_stalled_after_three_intervals_or_never() -> None:
    assert sweeper_stalled(None, sweep_interval=5, now=100)
    assert not sweeper_stalled(90.0, sweep_interval=5, now=100)
    assert sweeper_stalled(84.0, sweep_interval=5, now=100)


async def test_signals_round_trip(redis: Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    assert await last_sweep_success(redis, keys) is None
    assert await read_disruption(redis, keys) == DisruptionMode()
    await record_sweep_success(redis, keys, 1234.5)
    assert await last_sweep_success(redis, keys) == 1234.5
    on = DisruptionMode(active=True, since=99.25, stale=130, tracked=200)
    await write_disruption(redis, keys, on)
    got = await read_disruption(redis, keys)
    assert got == on and got.fraction == 0.65
    await write_disruption(redis, keys, DisruptionMode(stale=3, tracked=200))
    assert not (await read_disruption(redis, keys)).active
