"""During a backlog, drains must not multiply: beat's drain_due never continues itself, and a
`drain` that ran out of time sends one continuation only if it wins the kick's debounce window."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from statusd.sync import tasks
from statusd.sync.drain import DrainReport


class FakeRedis:
    def __init__(self) -> None:
        self.held: set[str] = set()

    async def set(self, key: str, value: bytes, *, nx: bool, px: int) -> bool:
        assert nx and px > 0
        if key in self.held:
            return False
        self.held.add(key)
        return True


class FakeRuntime:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.engine = None
        self.settings = type("S", (), {"sync_interval": 1.0, "sync_kick_debounce_ms": 200})()
        self.keys = type("K", (), {"sync_kick": "kick"})()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every drain always runs out of time (a backlog); records the continuations sent."""
    runtime = FakeRuntime(FakeRedis())
    messages: list[dict[str, Any]] = []

    async def backlog(*args: Any, **kwargs: Any) -> DrainReport:
        return DrainReport(claimed=10, delivered=10, stopped_early=True)

    def run(fn: Callable[[Any], Awaitable[Any]]) -> Any:
        return asyncio.run(fn(runtime))  # type: ignore[arg-type]

    monkeypatch.setattr(tasks, "drain", backlog)
    monkeypatch.setattr(tasks.worker_runtime, "run", run)
    monkeypatch.setattr(tasks.drain_task, "apply_async", lambda **kw: messages.append(kw))
    return messages


def test_drain_due_never_starts_a_chain(sent: list[dict[str, Any]]) -> None:
    for _ in range(3):
        assert tasks.drain_due_task()["stopped_early"]
    assert sent == []


def test_a_drain_continues_only_when_it_wins_the_window(sent: list[dict[str, Any]]) -> None:
    tasks.drain_task()
    tasks.drain_task()  # same window: the first continuation covers it
    tasks.drain_task(workload_id="w1")
    assert sent == [{"kwargs": {"workload_id": None}, "queue": "sync"}]
