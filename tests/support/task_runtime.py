"""Run a Celery task function in-process on a real Runtime (real Redis, real database).

`worker_runtime.run` is what every task body calls to reach its per-process runtime; pointing it
at a runtime opened here on the test's settings lets a test call the task function directly and
still exercise real Redis and SQL (no stand-ins for either)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from statusd.celery import worker_runtime
from statusd.runtime import Runtime
from statusd.settings import Settings
from statusd.wiring import open_runtime

T = TypeVar("T")


@contextmanager
def task_runtime(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    loop = asyncio.new_event_loop()
    rt = loop.run_until_complete(open_runtime(settings))

    def run(fn: Callable[[Runtime], Awaitable[T]]) -> Any:
        return loop.run_until_complete(fn(rt))

    monkeypatch.setattr(worker_runtime, "run", run)
    try:
        yield rt
    finally:
        loop.run_until_complete(rt.close())
        loop.close()
