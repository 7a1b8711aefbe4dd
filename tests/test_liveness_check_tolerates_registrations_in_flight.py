"""The Redis-loss check does not mistake registrations in flight for data loss.

A registration commits to the database before its id reaches the liveness sets; a burst of
registrations used to make every sweep log "the liveness sets hold 109 ids for 114 tracked
workloads" and rebuild. Only workloads registered over REGISTRATION_GRACE_S ago are compared,
and a real loss among those is still found. Real Redis, both databases."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from statusd.db import transaction
from statusd.lifecycle import Kind
from statusd.liveness import on_registered
from statusd.models import WorkloadRow
from statusd.recovery import REGISTRATION_GRACE_S, liveness_missing
from statusd.registry import register
from statusd.runtime import Runtime, open_pools
from statusd.settings import Settings

_W = WorkloadRow.__table__  # type: ignore[attr-defined]
IDS = ["reg-a", "reg-b", "reg-c"]


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = await open_pools(settings)
    yield runtime
    await runtime.close()


async def test_young_registrations_are_not_a_loss_old_missing_ones_are(rt: Runtime) -> None:
    await rt.redis.set(rt.keys.liveness_built, repr(time.time()))  # a view was built before
    for wid in IDS:
        await register(rt.engine, wid, Kind.TRAINING)  # in the database, not yet in Redis
    assert await liveness_missing(rt.redis, rt.keys, rt.engine) is None

    long_ago = datetime.now(UTC) - timedelta(seconds=6 * REGISTRATION_GRACE_S)
    async with transaction(rt.engine) as conn:  # the same rows, registered long ago
        await conn.execute(update(_W).values(created_at=long_ago))
    why = await liveness_missing(rt.redis, rt.keys, rt.engine)
    assert why is not None and "hold 0 ids for 3 tracked" in why

    for wid in IDS:
        await on_registered(rt.redis, rt.keys, wid, time.time())
    assert await liveness_missing(rt.redis, rt.keys, rt.engine) is None
