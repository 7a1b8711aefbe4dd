"""Prompt outbox drain after a new transition. Owned by the sync work; wired by statusd.wiring.

Debounced in Redis (SET NX PX on `keys.sync_kick`): in a burst, one kick per window, for every
process together. The drain task is sent with a countdown of one window, so it runs after every
transition committed inside that window. Publishing to the broker is blocking kombu I/O, so it
runs on one background thread and is never awaited: the transition path does not wait for the
broker. A lost kick costs latency only: beat's `statusd.sync.drain_due` drains everything anyway.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import structlog
from celery import Celery
from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.lifecycle import CONTACT_STATES
from statusd.settings import Settings
from statusd.sweeper.celery_app import create_celery
from statusd.task_names import SYNC_DRAIN_TASK, SYNC_QUEUE
from statusd.transitions import AppliedTransition, TransitionListener

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
            app = _apps[key] = create_celery(settings)
        return app


def enqueue_drain(settings: Settings, countdown: float = 0.0) -> None:
    """Blocking: publish one `statusd.sync.drain` task (everything due) on queue `sync`."""
    celery_for(settings).send_task(
        SYNC_DRAIN_TASK,
        queue=SYNC_QUEUE,
        countdown=countdown or None,
        retry=True,
        retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    )


async def claim_window(redis: Redis, keys: Keys, settings: Settings) -> bool:
    """Win the debounce window (`keys.sync_kick`, SET NX PX): only the winner sends a drain task.

    Shared by the post-commit kick and a drain continuing itself, so however many transitions
    and drains there are, at most one drain is sent per window."""
    return bool(await redis.set(keys.sync_kick, b"1", nx=True, px=settings.sync_kick_debounce_ms))


def _logged(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning(
            "sync.kick_failed", error=f"{type(exc).__name__}: {exc}", fallback="beat drain_due"
        )


def sync_kick_listener(settings: Settings, redis: Redis, keys: Keys) -> TransitionListener:
    """Post-commit: ask a sync worker to drain soon (debounced). Beat drains anyway if this is lost."""
    window_ms = settings.sync_kick_debounce_ms
    if not settings.main_api_url and not settings.alert_webhooks:

        async def nothing_to_send(batch: Sequence[AppliedTransition]) -> None:
            return None  # sync disabled and no webhooks: rows stay pending, nothing to drain

        return nothing_to_send

    async def kick(batch: Sequence[AppliedTransition]) -> None:
        if not settings.main_api_url and not any(
            {t.from_state, t.to_state} & CONTACT_STATES for t in batch
        ):
            return  # only alert rows would be waiting, and only contact changes write those
        if not await claim_window(redis, keys, settings):
            return  # a drain is already scheduled for the end of this window
        future = _thread().submit(enqueue_drain, settings, window_ms / 1000)
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
