"""The drain-kick hook: ask a sync worker for an outbox drain, without waiting for the broker.

Every Runtime opened by statusd.wiring gets `kicker(settings)` as its `kick_drain` hook; the
areas that write outbox rows (the sync kick listener, the sweeper's disruption alerts) call the
hook and never import a Celery task. Publishing to the broker is blocking kombu I/O, so it runs
on one background thread per process and is never awaited. A lost kick costs latency only:
beat's `statusd.sync.drain_due` drains everything due anyway.

Celery is loaded on the first kick, not when the hook is built: `serve` and `consume` build the
hook in every process, and most of them never kick (Celery and kombu are ~6% of their start-up).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import structlog

from statusd.celery.names import SYNC_DRAIN_TASK, QueueName
from statusd.runtime import DrainKick
from statusd.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

log = structlog.get_logger("statusd.sync")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_apps: dict[tuple[int, str], Celery] = {}


def _thread() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="statusd-sync-kick")
        return _executor


def celery_for(settings: Settings) -> Celery:
    """A producer-only Celery app per (process, broker), built once: send_task by name only."""
    key = (os.getpid(), settings.effective_broker_url)  # a forked child builds its own connections
    with _lock:
        app = _apps.get(key)
        if app is None:
            from statusd.celery.application import create_celery

            app = _apps[key] = create_celery(settings)
        return app


def enqueue_drain(settings: Settings, countdown: float = 0.0) -> None:
    """Blocking: publish one `statusd.sync.drain` task (everything due) on queue `sync`."""
    celery_for(settings).send_task(
        SYNC_DRAIN_TASK,
        queue=QueueName.SYNC.value,
        countdown=countdown or None,
        retry=True,
        retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    )


def _logged(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning(
            "sync.kick_failed", error=f"{type(exc).__name__}: {exc}", fallback="beat drain_due"
        )


def kicker(settings: Settings) -> DrainKick:
    """The hook: publish a drain `delay_s` from now on the background thread; never raises."""

    def kick(delay_s: float = 0.0) -> None:
        future = _thread().submit(enqueue_drain, settings, delay_s)
        future.add_done_callback(_logged)

    return kick


def close() -> None:
    """Let queued kicks finish, then close the producer connections (process shutdown, tests)."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
        apps = list(_apps.values())
        _apps.clear()
    if executor is not None:
        executor.shutdown(wait=True)
    for app in apps:
        app.close()
