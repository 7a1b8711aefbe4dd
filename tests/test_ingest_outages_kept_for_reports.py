"""The ingest listening beat records every gap in listening as an outage (real Redis, its real
script, a controllable clock); `persist` keeps them in the database (SQLite and PostgreSQL),
once each, so availability reports still leave them out after Redis lost its data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy import select

from statusd.availability.outages import outages_between, persist, recorded_in_redis
from statusd.availability.timeline import Span
from statusd.db import create_engine, reading
from statusd.hearing import ListeningBeat, Pace
from statusd.keys import Keys
from statusd.models import IngestOutage
from statusd.settings import Settings

_O = IngestOutage.__table__  # type: ignore[attr-defined]
T0 = 1_800_000_000.0


async def test_gaps_in_listening_become_outages_kept_in_the_database(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings()
    keys = Keys(settings.redis_prefix)
    beat = ListeningBeat(redis, keys, Pace(settings))
    other = ListeningBeat(redis, keys, Pace(settings))  # a second serve process
    for s in range(0, 60, 1):
        await (beat if s % 2 else other).beat(T0 + s)
    assert await recorded_in_redis(redis, keys) == []  # beats 1 s apart: no gap
    await beat.beat(T0 + 59 + 300)  # every process was down for 5 minutes
    await other.beat(T0 + 360)  # the other one comes back a second later: no new gap
    await beat.beat(T0 + 400)  # ...then a 39 s gap
    assert await recorded_in_redis(redis, keys) == [
        Span(T0 + 59, T0 + 359),
        Span(T0 + 360, T0 + 400),
    ]

    engine = create_engine(settings.database_url)
    try:
        assert await persist(redis, keys, engine) == 2
        assert await persist(redis, keys, engine) == 0  # idempotent
        await redis.delete(keys.ingest_outages)  # Redis lost its data
        async with reading(engine) as conn:
            rows = list(await conn.execute(select(_O).order_by(_O.c.started_at)))
            kept = await outages_between(conn, None, None, Span(T0, T0 + 1000))
        assert [(r.started_at, r.ended_at) for r in rows] == [
            (datetime.fromtimestamp(T0 + 59, UTC), datetime.fromtimestamp(T0 + 359, UTC)),
            (datetime.fromtimestamp(T0 + 360, UTC), datetime.fromtimestamp(T0 + 400, UTC)),
        ]
        # Outages that touch merge into one span for the reports.
        assert kept == [Span(T0 + 59, T0 + 359), Span(T0 + 360, T0 + 400)]
    finally:
        await engine.dispose()
