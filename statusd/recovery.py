"""Liveness that survives Redis data loss: notice it, and rebuild the sweeper's view from the DB.

Redis holds everything the sweeper looks at (last_seen, pending_since). When it loses its data (a
restart without persistence, a failover that drops the last writes, FLUSHDB), every workload
vanishes from those sets and would never be looked at again: a training that dies afterwards
would stay RUNNING forever. So each `serve`, `consume` and `worker` start, and every sweep, runs
`ensure_liveness`:

- detection, cheap (one Redis pipeline + one SQL COUNT): the marker `keys.liveness_built` (written
  by the last rebuild) is gone, or the liveness sets hold fewer ids than the database's tracked
  (registered, non-final) workloads;
- rebuild: every tracked workload goes back into the sweeper's view with the moment of the rebuild
  as its last sign of life (ZADD NX: a score already there is newer evidence and is never
  touched), so one that stays silent is polled one TTL later and one that is alive is not
  disturbed; PENDING ones never heard from get their start-timeout clock back instead. Their
  current generations are recorded for ingest's generation check.
- the consumer groups are recreated (consumers also do that on NOGROUP), leases are re-acquired
  by the consumers and the state cache refills itself (empty after a data loss; after a restart
  that kept the data the consumers drop it: statusd.state_cache).

Steady heartbeats still write no SQL row: the database only knows what it always knew (state,
generation, registration), which is all a rebuild needs.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import structlog
from redis.asyncio import Redis
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd import liveness
from statusd.db import reading
from statusd.ingest.streams import ensure_groups
from statusd.keys import Keys
from statusd.lifecycle import FINAL_STATES, State
from statusd.liveness import Registrations
from statusd.runtime import Runtime, open_pools
from statusd.settings import Settings
from statusd.tables import WORKLOADS

log = structlog.get_logger("statusd.recovery")
REBUILD_CHUNK = 1000  # workloads per Redis pipeline
# A registration commits to the database before the API adds the id to the liveness sets, so
# during a burst of registrations the sets briefly hold fewer ids than the database. Only
# workloads registered longer ago than this are compared (a real loss is still seen, at most this
# much later), else every burst would log a false "Redis lost its data" and rebuild.
REGISTRATION_GRACE_S = 10.0


def _tracked() -> ColumnElement[bool]:
    return and_(
        WORKLOADS.c.deleted_at.is_(None), WORKLOADS.c.state.not_in([s.value for s in FINAL_STATES])
    )


async def tracked_count(engine: AsyncEngine, *, registered_before: datetime | None = None) -> int:
    """Registered, non-final workloads (the sweeper must be able to see them); with
    `registered_before`, only those registered earlier."""
    where = _tracked()
    if registered_before is not None:
        where = and_(where, WORKLOADS.c.created_at < registered_before)
    async with reading(engine) as conn:
        result = await conn.execute(select(func.count()).select_from(WORKLOADS).where(where))
        return int(result.scalar_one())


async def liveness_missing(redis: Redis, keys: Keys, engine: AsyncEngine) -> str | None:
    """Why the liveness view must be rebuilt, or None when it looks whole."""
    built = await redis.exists(keys.liveness_built)
    seen, pending = await liveness.tracked(redis, keys)
    if not built:
        return "the rebuild marker is gone (Redis lost its data, or never built)"
    settled = datetime.now(UTC) - timedelta(seconds=REGISTRATION_GRACE_S)
    tracked = await tracked_count(engine, registered_before=settled)
    if int(seen) + int(pending) < tracked:
        return (
            f"the liveness sets hold {int(seen) + int(pending)} ids for {tracked} tracked "
            f"workloads registered over {REGISTRATION_GRACE_S:g}s ago"
        )
    return None


async def rebuild(redis: Redis, keys: Keys, engine: AsyncEngine, *, shards: int, at: float) -> int:
    """Put every tracked workload back into the sweeper's view; returns how many there are."""
    cols = (WORKLOADS.c.id, WORKLOADS.c.state, WORKLOADS.c.generation, WORKLOADS.c.last_seen_at)
    async with reading(engine) as conn:
        rows = (await conn.execute(select(*cols).where(_tracked()).order_by(WORKLOADS.c.id))).all()
    registrations = Registrations(redis, keys)
    for start in range(0, len(rows), REBUILD_CHUNK):
        part = rows[start : start + REBUILD_CHUNK]
        never_seen = {
            r.id for r in part if State(r.state) is State.PENDING and r.last_seen_at is None
        }
        generation = {r.id: int(r.generation) for r in part}
        # One pipeline per chunk, commands grouped by shard (each touches one slot).
        async with redis.pipeline(transaction=False) as pipe:
            for shard, ids in keys.by_shard(r.id for r in part).items():
                seen = {wid: at for wid in ids if wid not in never_seen}
                if seen:
                    pipe.zadd(keys.last_seen(shard), seen, nx=True)
                if pending := {wid: at for wid in ids if wid in never_seen}:
                    pipe.zadd(keys.pending_since(shard), pending, nx=True)
            await registrations.raise_generations(generation, client=pipe)
            await pipe.execute()
    await ensure_groups(redis, keys, shards)
    await redis.set(keys.liveness_built, repr(at))
    return len(rows)


async def ensure_liveness(rt: Runtime) -> bool:
    """Rebuild the liveness view when it is missing or short; True when a rebuild ran."""
    why = await liveness_missing(rt.redis, rt.keys, rt.engine)
    if why is None:
        return False
    started = time.monotonic()
    count = await rebuild(
        rt.redis, rt.keys, rt.engine, shards=rt.settings.stream_shards, at=time.time()
    )
    log.warning(
        "liveness.rebuilt",
        reason=why,
        workloads=count,
        duration_s=round(time.monotonic() - started, 3),
    )
    return True


async def ensure_liveness_at_start(rt: Runtime) -> None:
    """At a process start: rebuild when needed, but never fail the start (Redis or the database
    may still be coming up; every sweep checks again)."""
    try:
        await ensure_liveness(rt)
    except Exception as exc:  # any failure: log and carry on, the next sweep retries
        log.warning("liveness.check_failed", error=f"{type(exc).__name__}: {exc}")


async def check_at_start(settings: Settings) -> None:
    """`ensure_liveness_at_start` for a process that has no runtime open yet (`statusd worker`)."""
    try:
        rt = await open_pools(settings, redis_max_connections=4)  # reads and rebuilds: no listeners
    except Exception as exc:  # the worker reports its own configuration problems when it starts
        log.warning("liveness.check_failed", error=f"{type(exc).__name__}: {exc}")
        return
    try:
        await ensure_liveness_at_start(rt)
    finally:
        await rt.close()
