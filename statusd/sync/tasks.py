"""Celery tasks of the sync area (queue `sync`, routed by statusd.sweeper.celery_app).

- `statusd.sync.drain`: sent by the post-commit kick (or an operator); drains promptly. When its
  time runs out with rows left, it sends one continuation, but only if it wins the kick's debounce
  window (statusd.sync.kick.claim_window): during a backlog there is at most one drain sent per
  window, never a growing number of self-continuing chains.
- `statusd.sync.drain_due`: beat, every STATUSD_SYNC_INTERVAL; drains whatever is due (rows a
  previous run gave up on, kicks that were lost) and refreshes the outbox gauges. It never
  continues itself: the next beat is its continuation.
All run the same bounded drain; several of them at once are safe (leases, see statusd.sync.drain).
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import shared_task

from statusd import worker_runtime
from statusd.runtime import Runtime
from statusd.sweeper.celery_app import SYNC_DRAIN_DUE_TASK, SYNC_DRAIN_TASK, SYNC_QUEUE
from statusd.sync.drain import drain
from statusd.sync.kick import claim_window

log = structlog.get_logger("statusd.sync")


def _run_seconds(rt: Runtime) -> float:
    """A run yields its worker slot after this long (see the continuation)."""
    return max(rt.settings.sync_run_s, 3 * rt.settings.sync_interval)


async def _drain(
    rt: Runtime, workload_id: str | None, *, may_continue: bool
) -> tuple[dict[str, Any], bool]:
    """One bounded drain; returns its report and whether this run should send a continuation."""
    report = await drain(
        rt.engine,
        rt.settings,
        workload_ids=[workload_id] if workload_id else None,
        max_seconds=_run_seconds(rt),
    )
    continues = (
        may_continue and report.stopped_early and await claim_window(rt.redis, rt.keys, rt.settings)
    )
    return report.as_dict(), continues


@shared_task(name=SYNC_DRAIN_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def drain_task(workload_id: str | None = None) -> dict[str, Any]:
    """Drain now (one workload, or everything due). Continues itself if its time ran out and no
    other drain is already sent for this debounce window."""
    result, continues = worker_runtime.run(lambda rt: _drain(rt, workload_id, may_continue=True))
    if continues:
        drain_task.apply_async(kwargs={"workload_id": workload_id}, queue=SYNC_QUEUE)
    return result


@shared_task(name=SYNC_DRAIN_DUE_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def drain_due_task() -> dict[str, Any]:
    """Beat: drain everything due. The next beat continues it."""
    result, _ = worker_runtime.run(lambda rt: _drain(rt, None, may_continue=False))
    return result
