"""Celery entry points of the sync area (queue `sync`, routed by statusd.celery.application).

- `statusd.sync.drain`: sent by the drain-kick hook (or an operator); drains promptly. When its
  time runs out with rows left, it sends one continuation, but only if it wins the kick's debounce
  window (statusd.sync.kick.claim_window): during a backlog there is at most one drain sent per
  window, never a growing number of self-continuing chains.
- `statusd.sync.drain_due`: beat, every STATUSD_SYNC_INTERVAL; drains whatever is due (rows a
  previous run gave up on, kicks that were lost) and refreshes the outbox gauges. It never
  continues itself: the next beat is its continuation.
All run the same bounded drain; several of them at once are safe (leases, see statusd.sync.drain).
In a worker that serves the sweeper too, a drain that finds the worker's drain slot taken
(statusd.celery.sync_slots) gives its prefork slot back at once: `drain_due` ends (the running
drain drains what is due), `drain` is sent again one debounce window later if it wins it.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import shared_task

from statusd.celery import sync_slots, worker_runtime
from statusd.celery.names import SYNC_DRAIN_DUE_TASK, SYNC_DRAIN_TASK, QueueName
from statusd.errors import is_transient
from statusd.runtime import Runtime
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


async def _send_again(rt: Runtime) -> bool:
    """A drain that found no free drain slot: sent again after the window, if it wins it."""
    return await claim_window(rt.redis, rt.keys, rt.settings)


def _run(workload_id: str | None, *, may_continue: bool) -> tuple[dict[str, Any], float | None]:
    """Run one drain; returns its report and, when a drain is to follow, its delay in seconds."""
    try:
        with sync_slots.drain_slot() as free:
            if free:
                result, continues = worker_runtime.run(
                    lambda rt: _drain(rt, workload_id, may_continue=may_continue)
                )
                return result, (0.0 if continues else None)
        if not may_continue:
            return {"deferred": True}, None
        again = worker_runtime.run(_send_again)
        window_s = worker_runtime.settings().sync_kick_debounce_ms / 1000
        return {"deferred": True}, (window_s if again else None)
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning(
            "sync.drain_unavailable", error=f"{type(exc).__name__}: {exc}", retry="beat drain_due"
        )
        return {"unavailable": True}, None


@shared_task(name=SYNC_DRAIN_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def drain_task(workload_id: str | None = None) -> dict[str, Any]:
    """Drain now (one workload, or everything due). Continues itself if its time ran out and no
    other drain is already sent for this debounce window."""
    result, follow_in = _run(workload_id, may_continue=True)
    if follow_in is not None:
        drain_task.apply_async(
            kwargs={"workload_id": workload_id},
            queue=QueueName.SYNC.value,
            countdown=follow_in or None,
        )
    return result


@shared_task(name=SYNC_DRAIN_DUE_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def drain_due_task() -> dict[str, Any]:
    """Beat: drain everything due. The next beat continues it."""
    result, _ = _run(None, may_continue=False)
    return result
