"""Celery tasks of the sync area (queue `sync`, routed by statusd.sweeper.celery_app).

- `statusd.sync.drain`: sent by the post-commit kick (or an operator); drains promptly.
- `statusd.sync.drain_due`: beat, every STATUSD_SYNC_INTERVAL; drains whatever is due (rows a
  previous run gave up on, kicks that were lost) and refreshes the outbox gauges.
Both run the same bounded drain; several of them at once are safe (leases, see statusd.sync.drain).
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import shared_task

from statusd import worker_runtime
from statusd.runtime import Runtime
from statusd.sync.drain import drain
from statusd.sync.status import outbox_stats

log = structlog.get_logger("statusd.sync")

RUN_SECONDS_MIN = 30.0  # a run yields its worker slot after this long; it re-enqueues the rest


def _run_seconds(rt: Runtime) -> float:
    return max(RUN_SECONDS_MIN, 3 * rt.settings.sync_interval)


async def _drain(rt: Runtime, workload_id: str | None, refresh_stats: bool) -> dict[str, Any]:
    report = await drain(
        rt.engine,
        rt.settings,
        workload_ids=[workload_id] if workload_id else None,
        max_seconds=_run_seconds(rt),
    )
    if refresh_stats:
        await outbox_stats(rt.engine, rt.settings)
    return report.as_dict()


@shared_task(name="statusd.sync.drain", ignore_result=True)  # type: ignore[untyped-decorator]
def drain_task(workload_id: str | None = None) -> dict[str, Any]:
    """Drain now (one workload, or everything due). Continues itself if its time ran out."""
    result = worker_runtime.run(lambda rt: _drain(rt, workload_id, refresh_stats=False))
    if result["stopped_early"]:
        drain_task.apply_async(kwargs={"workload_id": workload_id}, queue="sync")
    return result


@shared_task(name="statusd.sync.drain_due", ignore_result=True)  # type: ignore[untyped-decorator]
def drain_due_task() -> dict[str, Any]:
    """Beat: drain everything due, and refresh the outbox gauges."""
    result = worker_runtime.run(lambda rt: _drain(rt, None, refresh_stats=True))
    if result["stopped_early"]:
        drain_task.apply_async(queue="sync")
    return result
