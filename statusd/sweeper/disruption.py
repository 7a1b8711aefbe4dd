"""Disruption mode: when most of the fleet goes silent at once, suspect ourselves, not them.

Each sweep compares the stale workloads it found with the tracked, non-final workloads in the
database. More than STATUSD_DISRUPTION_FRACTION of them (and at least STATUSD_DISRUPTION_MIN)
at once is far more likely a partition, a zone outage or statusd's own trouble than that many
independent deaths (Kubernetes' node lifecycle controller stops evicting for the same reason).
While the mode is on, polls still run and every good answer is applied, but the poller moves no
unconfirmed workload to UNREACHABLE or LOST (statusd.sweeper.poller); it leaves the mode by itself
at the first sweep that sees the fraction fall back.

The judgement lives in Redis (statusd.selfwatch, read by the poller, /metrics, the page and the
stale report). Entering and leaving are each announced ONCE through the alert outbox: the flip of
the Redis hash is a WATCH/MULTI transaction, so of any number of sweeps (two beats, two workers)
judging at once exactly one sees the hash change and writes the alert rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from redis.asyncio import Redis
from redis.exceptions import WatchError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.alert_routes import AlertRoutes
from statusd.alerting import AlertEvent
from statusd.db import reading, transaction
from statusd.keys import Keys
from statusd.lifecycle import FINAL_STATES
from statusd.models import OutboxTarget
from statusd.outbox_writer import OutboxEvent, disruption_key, write_outbox
from statusd.runtime import Runtime
from statusd.selfwatch import DisruptionMode, read_disruption, write_disruption
from statusd.staleness import fleet_suspect
from statusd.tables import WORKLOADS

log = structlog.get_logger("statusd.sweeper")

FLIP_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Flip:
    """A change of mode this call made (and nobody else did)."""

    event: AlertEvent
    disruption: DisruptionMode


async def tracked_workloads(engine: AsyncEngine) -> int:
    """Registered, non-final workloads: the ones that are expected to be heard from."""
    async with reading(engine) as conn:
        count = await conn.execute(
            select(func.count())
            .select_from(WORKLOADS)
            .where(WORKLOADS.c.deleted_at.is_(None), WORKLOADS.c.state.notin_(list(FINAL_STATES)))
        )
        return int(count.scalar_one())


async def record(redis: Redis, keys: Keys, active: bool, stale: int, tracked: int) -> Flip | None:
    """Write this sweep's judgement; a Flip when it changed the mode (exactly one caller sees it)."""
    for _ in range(FLIP_ATTEMPTS):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(keys.disruption)
                before = await read_disruption(pipe, keys)
                since = (before.since if before.active else time.time()) if active else None
                now = DisruptionMode(active=active, since=since, stale=stale, tracked=tracked)
                pipe.multi()  # type: ignore[no-untyped-call]
                await write_disruption(pipe, keys, now)
                await pipe.execute()
            except WatchError:
                continue  # another sweep wrote in between: judge against what it wrote
        if before.active == active:
            return None
        return Flip(AlertEvent.DISRUPTION if active else AlertEvent.DISRUPTION_OVER, now)
    log.warning("disruption.record_contended", attempts=FLIP_ATTEMPTS)
    return None


def alert_payload(flip: Flip, at: float) -> dict[str, object]:
    d = flip.disruption
    if flip.event is AlertEvent.DISRUPTION:
        text = (
            f":satellite_antenna: statusd: {d.stale} of {d.tracked} workloads "
            f"({d.fraction:.0%}) went silent at once. Suspecting statusd or the network: "
            "no workload is marked UNREACHABLE or LOST until this ends."
        )
    else:
        text = (
            f":white_check_mark: statusd: disruption over ({d.stale} of {d.tracked} stale); "
            "UNREACHABLE / LOST verdicts resume."
        )
    return {
        "text": text,
        "event": flip.event.value,
        "workload_id": None,
        "stale": d.stale,
        "tracked": d.tracked,
        "fraction": round(d.fraction, 4),
        "since": datetime.fromtimestamp(d.since, UTC).isoformat() if d.since else None,
        "changed_at": datetime.fromtimestamp(at, UTC).isoformat(),
    }


async def enqueue_alert(engine: AsyncEngine, destinations: Sequence[str], flip: Flip) -> None:
    """One alert outbox row per destination (statusd.outbox_writer), in the ordering group of
    statusd's own events, so `disruption_over` is never sent before the `disruption` it ends;
    the drain delivers them with its usual retries."""
    if not destinations:
        return
    at = time.time()
    at_ms = int(at * 1000)
    event = OutboxEvent(
        key=disruption_key(at_ms),
        target=OutboxTarget.ALERT,
        payload=alert_payload(flip, at),
        destinations=tuple(destinations),
    )
    try:
        async with transaction(engine) as conn:
            await write_outbox(conn, [event])
    except IntegrityError:  # the same millisecond twice: already queued
        log.warning("disruption.alert_duplicate", event=flip.event.value)


async def judge(rt: Runtime, stale: int) -> Flip | None:
    """Judge this sweep's `stale` count against the tracked fleet; record it; alert on a flip."""
    settings = rt.settings
    tracked = await tracked_workloads(rt.engine)
    active = fleet_suspect(
        stale, tracked, fraction=settings.disruption_fraction, minimum=settings.disruption_min
    )
    flip = await record(rt.redis, rt.keys, active, stale, tracked)
    if flip is None:
        return None
    log.warning("disruption.started" if active else "disruption.over", stale=stale, tracked=tracked)
    destinations = AlertRoutes.from_settings(settings).for_statusd()
    await enqueue_alert(rt.engine, destinations, flip)
    if destinations:
        rt.kick_drain(0.0)  # prompt delivery; beat's drain_due sends it anyway
    return flip
