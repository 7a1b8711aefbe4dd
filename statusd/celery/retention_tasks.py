"""Celery task of retention: `statusd.retention.prune`, sent by beat every
STATUSD_RETAIN_INTERVAL seconds on the sync queue. Copies the ingest outages Redis recorded into
the database first (availability reports and the rollup read them there), then prunes."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from statusd.availability.outages import persist
from statusd.celery import worker_runtime
from statusd.celery.names import RETENTION_TASK
from statusd.retention import prune
from statusd.runtime import Runtime


async def _run(rt: Runtime) -> dict[str, Any]:
    await persist(rt.redis, rt.keys, rt.engine)
    report = await prune(rt.engine, rt.settings)
    return report.as_json()


@shared_task(name=RETENTION_TASK)  # type: ignore[untyped-decorator]
def prune_task() -> dict[str, Any]:
    """Bring every table within its retention policy, in bounded batches."""
    return worker_runtime.run(_run)
