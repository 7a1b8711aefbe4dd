"""The fleet at a glance: workloads per kind x state, stale counts, sync backlog, stream lag.

Served as GET /v1/reports/summary (the status page uses it) and printed by `statusd report summary`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from statusd.access.label_sql import carrying
from statusd.db import reading
from statusd.ingest.streams import stream_stats
from statusd.lifecycle import Kind, State
from statusd.oncall.backlog import broker_queue_depths
from statusd.oncall.stale_report import StaleFilter, stale_report
from statusd.runtime import Runtime
from statusd.schema import reports
from statusd.sync.status import outbox_stats
from statusd.tables import WORKLOADS


async def state_counts(
    runtime: Runtime, labels: Mapping[str, str] | None = None
) -> dict[Kind, dict[State, int]]:
    """{kind: {state: n}} of registered (not deleted) workloads carrying `labels`; every kind is
    present."""
    counts: dict[Kind, dict[State, int]] = {k: {} for k in Kind}
    async with reading(runtime.engine) as conn:
        rows = await conn.execute(
            select(WORKLOADS.c.kind, WORKLOADS.c.state, func.count())
            .where(WORKLOADS.c.deleted_at.is_(None), *carrying((labels or {}).items()))
            .group_by(WORKLOADS.c.kind, WORKLOADS.c.state)
        )
        for kind, state, n in rows:
            counts[Kind(kind)][State(state)] = int(n)
    return counts


async def sync_backlog(runtime: Runtime) -> dict[str, Any]:
    """The outbox: depth, oldest unsynced age, dead letters (statusd.sync.status.outbox_stats)."""

    return await outbox_stats(runtime.engine, runtime.settings)


async def fleet_summary(
    runtime: Runtime, labels: Mapping[str, str] | None = None
) -> reports.Summary:
    """Everything `report summary` shows (GET /v1/reports/summary answers it as it is).

    `labels` (a key's): the workload counts are of the workloads carrying them; the sync backlog,
    stream lag and queues are statusd's own and name no workload."""
    now = time.time()
    flt = StaleFilter(labels=tuple((labels or {}).items()))
    stale = await stale_report(
        runtime.settings, runtime.engine, runtime.redis, runtime.keys, flt, now=now
    )
    by_reason = Counter(item.reason for item in stale)
    by_kind = Counter(Kind(item.kind) for item in stale)
    stream = await stream_stats(runtime.redis, runtime.keys, runtime.settings.stream_shards)
    return reports.Summary(
        generated_at=datetime.fromtimestamp(now, UTC).isoformat(),
        counts=await state_counts(runtime, labels),
        stale=reports.StaleCounts(
            total=len(stale), by_reason=dict(by_reason), by_kind=dict(by_kind)
        ),
        sync=reports.SyncBacklog.model_validate(await sync_backlog(runtime)),
        stream=reports.StreamLag.model_validate(stream.as_dict()),
        celery_queues=await broker_queue_depths(runtime),
    )
