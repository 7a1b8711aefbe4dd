"""Async code inside Celery's synchronous tasks: one event loop and one Runtime per worker process.

Celery tasks are sync; statusd's I/O is async. Each worker process keeps a single loop and opens
the Runtime (engine, bounded Redis pool) once, lazily, instead of per task: a pool per task would
churn connections, and managed Redis caps them. `reset()` runs after fork (worker_process_init)
so a child never reuses its parent's sockets. The `worker` command attaches these hooks
(`attach_to_worker`) and hands over how a Runtime is opened (the composition root's
`statusd.wiring.open_runtime`, which attaches the post-commit listeners and the drain-kick hook);
building the Celery app alone (an API process sending tasks) does none of this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog
from celery import signals

from statusd.errors import ConfigError
from statusd.logs import configure_logging
from statusd.settings import Settings
from statusd.settings_loader import load_settings

if TYPE_CHECKING:
    # Only named in annotations: beat configures this module and never opens a Runtime.
    from statusd.runtime import Runtime

T = TypeVar("T")
log = structlog.get_logger("statusd.worker")


class RuntimeOpener(Protocol):
    """How this process opens its Runtime (pools, listeners, hooks)."""

    def __call__(
        self, settings: Settings, *, redis_max_connections: int | None = None
    ) -> Awaitable[Runtime]: ...


_loop: asyncio.AbstractEventLoop | None = None
_runtime: Runtime | None = None
_settings: Settings | None = None
_opener: RuntimeOpener | None = None
WORKER_REDIS_CONNECTIONS = 8  # per worker process: bounded, so N workers never exhaust Redis


def configure(settings: Settings, opener: RuntimeOpener | None = None) -> None:
    """Hand this process its settings (the `worker` and `beat` commands do, from the CLI loader)
    and, in a worker, how to open the Runtime its tasks run on."""
    global _settings, _opener
    _settings = settings
    if opener is not None:
        _opener = opener


def settings() -> Settings:
    """This process's settings; loaded from the environment if no command handed them over
    (a beat started as `celery -A statusd.celery.application beat`)."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def attach_to_worker(settings: Settings, opener: RuntimeOpener) -> None:
    """Worker signal hooks: a forked child starts afresh; every process closes its runtime."""
    configure(settings, opener)
    signals.worker_process_init.connect(_child_started, weak=False)
    signals.worker_process_shutdown.connect(_child_stopping, weak=False)
    signals.worker_shutdown.connect(_child_stopping, weak=False)  # solo pool: no children


def _child_started(**_: Any) -> None:
    reset()  # a forked child must not reuse its parent's loop or sockets
    configure_logging(settings())


def _child_stopping(**_: Any) -> None:
    shutdown()


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
        if _opener is None:
            raise ConfigError(
                "this process runs statusd tasks but was not started as a worker: "
                "run `statusd worker`"
            )
        _runtime = run_on(loop, _opener(settings(), redis_max_connections=WORKER_REDIS_CONNECTIONS))
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
    """Worker (process) shutdown: close the runtime (its close hooks let queued drain kicks go
    out) and the loop."""
    global _loop, _runtime
    if _loop is not None and _runtime is not None and not _loop.is_closed():
        _loop.run_until_complete(_runtime.close())
    if _loop is not None and not _loop.is_closed():
        _loop.close()
    _loop, _runtime = None, None
