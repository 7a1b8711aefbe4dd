"""Celery entry points of the pull path: `statusd.sweeper.sweep` (beat-driven) and `.poll`.

Thin: they run the async code of statusd.sweeper.sweep / .poller on the worker process's one
event loop (statusd.celery.worker_runtime) and turn its results into messages and metrics. Redis
or the database being away is transient: the task logs one warning and ends, and the next beat's
sweep (or the next sweep's poll) does the work; it is never an unhandled task error.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from celery import Task, shared_task

from statusd.celery import worker_runtime
from statusd.celery.names import POLL_TASK, SWEEP_TASK
from statusd.errors import is_transient
from statusd.metrics import SWEEP_DURATION, SWEEP_STALE
from statusd.sweeper import poll_leases
from statusd.sweeper.poller import run_poll
from statusd.sweeper.sweep import SweepResult, run_sweep

log = structlog.get_logger("statusd.sweeper")


def _unavailable(event: str, exc: Exception, **fields: Any) -> None:
    log.warning(event, error=f"{type(exc).__name__}: {exc}", **fields)


@shared_task(name=SWEEP_TASK, bind=True)  # type: ignore[untyped-decorator]
def sweep(self: Task) -> dict[str, Any]:
    """Find stale workloads and enqueue one `poll` task per chunk of them."""
    token = f"sweep-{uuid.uuid4().hex}"
    try:
        result: SweepResult = worker_runtime.run(lambda rt: run_sweep(rt, token))
    except Exception as exc:
        if not is_transient(exc):
            raise
        _unavailable("sweep.unavailable", exc, retry="next sweep")
        return {"skipped": True, "reason": "unavailable"}
    if result.skipped:
        log.info("sweep.skipped", reason="another sweep holds the lock")
        return {"skipped": True}
    _enqueue(result.chunks, token)
    SWEEP_DURATION.observe(result.duration_s)
    SWEEP_STALE.set(result.stale)
    summary = {
        "stale": result.stale,
        "dropped": result.dropped,
        "busy": result.busy,
        "enqueued": result.enqueued,
        "chunks": len(result.chunks),
        "duration_s": round(result.duration_s, 4),
    }
    if result.stale:
        log.info("sweep.done", **summary)
    return summary


@shared_task(name=POLL_TASK, bind=True)  # type: ignore[untyped-decorator]
def poll(self: Task, ids: Sequence[str], token: str) -> dict[str, int]:
    """Poll a chunk of leased workloads and apply what their endpoints say."""
    # The task id names the run: a redelivery (worker killed) redoes what the killed run held.
    run_id = str(self.request.id)
    try:
        report = worker_runtime.run(lambda rt: run_poll(rt, ids, token, run_id))
    except Exception as exc:
        if not is_transient(exc):
            raise
        # Leases it could not give back expire; a later sweep polls those workloads again.
        _unavailable("poll.unavailable", exc, workloads=len(ids))
        return {"leased": 0, "polled": 0}
    summary = {
        "leased": report.leased,
        "polled": report.polled,
        "ok": report.ok,
        "failed": report.failed,
        "applied": report.applied,
        "held_back": report.held_back,
        "backed_off": report.backed_off,
        "taken": report.taken,
    }
    log.info("poll.done", **summary)
    return summary


def _enqueue(chunks: Sequence[Sequence[str]], token: str) -> None:
    """One `poll` message per chunk. If the broker fails part way, the chunks not sent give
    their leases back at once: held, they would keep those workloads unpolled for a lease TTL."""
    sent = 0
    try:
        for chunk in chunks:
            poll.apply_async(args=[chunk, token])
            sent += 1
    except BaseException:
        log.warning("sweep.enqueue_failed", sent=sent, unsent_chunks=len(chunks) - sent)
        _release_unsent([wid for rest in chunks[sent:] for wid in rest], token)
        raise


def _release_unsent(ids: Sequence[str], token: str) -> None:
    try:
        worker_runtime.run(lambda rt: poll_leases.release(rt.redis, rt.keys, ids, token))
    except Exception as exc:  # the leases then expire on their own
        log.warning("sweep.release_failed", workloads=len(ids), error=str(exc))
