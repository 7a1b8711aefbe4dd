"""Async code inside Celery's synchronous tasks: one event loop and one Runtime per worker process.

Celery tasks are sync; statusd's I/O is async. Each worker process keeps a single loop and opens
the Runtime (engine, bounded Redis pool) once, lazily, instead of per task: a pool per task would
churn connections, and managed Redis caps them. `reset()` runs after fork (worker_process_init)
so a child never reuses its parent's sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from statusd.runtime import Runtime, open_runtime
from statusd.settings import Settings

T = TypeVar("T")
log = structlog.get_logger("statusd.worker")

_loop: asyncio.AbstractEventLoop | None = None
_runtime: Runtime | None = None
_settings: Settings | None = None
WORKER_REDIS_CONNECTIONS = 8  # per worker process: bounded, so N workers never exhaust Redis


def configure(settings: Settings) -> None:
    global _settings
    _settings = settings


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop


def run(fn: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run `fn(runtime)` to completion on this process's loop."""
    global _runtime
    loop = _event_loop()
    if _runtime is None:
        _runtime = run_on(
            loop, open_runtime(settings(), redis_max_connections=WORKER_REDIS_CONNECTIONS)
        )
    return run_on(loop, fn(_runtime))


def run_on(loop: asyncio.AbstractEventLoop, aw: Awaitable[T]) -> T:
    """`loop.run_until_complete(aw)` that never leaves `aw` pending on the loop.

    Celery's SoftTimeLimitExceeded is raised from a signal handler: it can escape
    run_until_complete while the coroutine is suspended, and the coroutine would then resume in
    the middle of the next task run on this loop. So on any exception out of the loop the task is
    cancelled and run until it has unwound (its finally blocks release leases and locks)."""
    task = asyncio.ensure_future(aw, loop=loop)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        if not task.done():
            task.cancel()
            try:
                loop.run_until_complete(task)
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # failed while unwinding: the first error is the one to raise
                log.warning("worker.cancel_failed", error=f"{type(exc).__name__}: {exc}")
        raise


def reset() -> None:
    """Forget (without closing: they belong to the parent) the loop and runtime inherited over fork."""
    global _loop, _runtime
    _loop, _runtime = None, None


def shutdown() -> None:
    """Worker (process) shutdown: close the runtime and the loop, then let queued sync kicks go
    out and close their producer connections (transitions applied here kick a drain)."""
    global _loop, _runtime
    from statusd.sync import kick  # not at import: kick -> celery_app -> this module

    try:
        if _loop is not None and _runtime is not None and not _loop.is_closed():
            _loop.run_until_complete(_runtime.close())
        if _loop is not None and not _loop.is_closed():
            _loop.close()
        _loop, _runtime = None, None
    finally:
        kick.close()
