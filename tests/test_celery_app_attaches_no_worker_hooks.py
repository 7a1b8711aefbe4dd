"""Building the Celery app (as the API process does to send a sync kick) configures nothing of the
worker: the worker's signal hooks are attached by the `worker` command alone
(statusd.celery.worker_runtime.attach_to_worker, run in the worker process; see the Celery end-to-end
tests for the hooks at work)."""

from __future__ import annotations

import weakref

from celery import signals

from statusd.celery.application import create_celery
from statusd.settings_loader import load_settings

WORKER_SIGNALS = (
    signals.worker_process_init,
    signals.worker_process_shutdown,
    signals.worker_shutdown,
)


def statusd_hooks() -> list[str]:
    """Receivers of the worker signals that statusd defined, as module.name."""
    found = []
    for signal in WORKER_SIGNALS:
        for _, receiver in signal.receivers:
            fn = receiver() if isinstance(receiver, weakref.ReferenceType) else receiver
            module = getattr(fn, "__module__", "") or ""
            if module.startswith("statusd"):
                found.append(f"{module}.{getattr(fn, '__name__', '?')}")
    return found


def test_create_celery_attaches_no_worker_hooks() -> None:
    app = create_celery(load_settings(redis_url="redis://127.0.0.1:1/0"))
    try:
        assert app.conf.task_default_queue == "sweep"  # it is the real, configured app
        assert statusd_hooks() == []
    finally:
        app.close()
