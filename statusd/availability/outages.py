"""Spans during which statusd could not hear: no ingest process was listening.

statusd.hearing's beat records each gap between two listening beats in Redis (`keys.
ingest_outages`); `persist` copies them into the `ingest_outages` table (retention's beat task
does, before every prune), so a Redis flush later loses none that reports need. Readers take the
union of both, plus the outage going on now, if any.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from statusd.availability.timeline import Span, merged
from statusd.db import is_sqlite, transaction
from statusd.hearing import LISTEN_GAP_S, read_hearing
from statusd.keys import Keys
from statusd.tables import INGEST_OUTAGES


async def recorded_in_redis(redis: Redis, keys: Keys) -> list[Span]:
    """Every outage the ingest beat recorded (the newest hearing.OUTAGES_KEPT)."""
    spans = []
    for member in await redis.zrange(keys.ingest_outages, 0, -1):
        raw = member.decode() if isinstance(member, bytes) else str(member)
        start, _, end = raw.partition("|")
        spans.append(Span(float(start), float(end)))
    return spans


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


async def persist(redis: Redis, keys: Keys, engine: AsyncEngine) -> int:
    """Copy Redis's outages into the database (idempotent: keyed by their start). Returns how
    many were new."""
    spans = await recorded_in_redis(redis, keys)
    if not spans:
        return 0
    async with transaction(engine) as conn:
        have = {
            r.started_at.timestamp()
            for r in await conn.execute(
                select(INGEST_OUTAGES.c.started_at).where(
                    INGEST_OUTAGES.c.started_at >= _at(spans[0].start)
                )
            )
        }
        new = [s for s in spans if _at(s.start).timestamp() not in have]
        if new:
            rows = [{"started_at": _at(s.start), "ended_at": _at(s.end)} for s in new]
            insert = sqlite.insert if is_sqlite(engine.url) else postgresql.insert
            await conn.execute(insert(INGEST_OUTAGES).on_conflict_do_nothing(), rows)
    return len(new)


async def outages_between(
    conn: AsyncConnection, redis: Redis | None, keys: Keys | None, window: Span
) -> list[Span]:
    """Outages overlapping `window`, from the database, Redis, and the one going on now."""
    rows = await conn.execute(
        select(INGEST_OUTAGES.c.started_at, INGEST_OUTAGES.c.ended_at).where(
            INGEST_OUTAGES.c.started_at < _at(window.end),
            INGEST_OUTAGES.c.ended_at > _at(window.start),
        )
    )
    spans = [Span(r.started_at.timestamp(), r.ended_at.timestamp()) for r in rows]
    if redis is not None and keys is not None:
        spans += await recorded_in_redis(redis, keys)
        hearing = await read_hearing(redis, keys)
        now = time.time()
        if hearing.last_beat is not None and now - hearing.last_beat > LISTEN_GAP_S:
            spans.append(Span(hearing.last_beat, now))
    return [s for s in merged(spans) if s.end > window.start and s.start < window.end]
