"""During a backlog, drains must not multiply: beat's drain_due never continues itself, and a
`drain` that ran out of time sends one continuation only if it wins the kick's debounce window
(a real SET NX PX on the real Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from statusd.settings import Settings
from statusd.sync import tasks
from statusd.sync.drain import DrainReport
from tests.support.task_runtime import task_runtime


@pytest.fixture
def sent(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every drain always runs out of time (a backlog); records the continuations sent.

    The debounce window is long enough that every call below falls in the same window."""
    messages: list[dict[str, Any]] = []

    async def backlog(*args: Any, **kwargs: Any) -> DrainReport:
        return DrainReport(claimed=10, delivered=10, stopped_early=True)

    monkeypatch.setattr(tasks, "drain", backlog)
    monkeypatch.setattr(tasks.drain_task, "apply_async", lambda **kw: messages.append(kw))
    windowed = settings.model_copy(update={"sync_kick_debounce_ms": 60_000})
    with task_runtime(windowed, monkeypatch):
        yield messages


def test_drain_due_never_starts_a_chain(sent: list[dict[str, Any]]) -> None:
    for _ in range(3):
        assert tasks.drain_due_task()["stopped_early"]
    assert sent == []


def test_a_drain_continues_only_when_it_wins_the_window(sent: list[dict[str, Any]]) -> None:
    tasks.drain_task()
    tasks.drain_task()  # same window: the first continuation covers it
    tasks.drain_task(workload_id="w1")
    assert sent == [{"kwargs": {"workload_id": None}, "queue": "sync"}]
