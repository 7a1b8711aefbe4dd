"""A broker failure part way through a sweep's enqueuing gives back the leases of the chunks that
were not sent (else those workloads would wait a whole lease TTL unpolled). Leases are real, in
the real Redis; only the broker send is made to fail."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from statusd.celery import sweeper_tasks as tasks
from statusd.celery import worker_runtime
from statusd.settings import Settings
from statusd.sweeper import poll_leases
from tests.support.task_runtime import task_runtime


def test_unsent_chunks_release_their_leases(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[list[str]] = []

    def apply_async(args: list[Any]) -> None:
        if len(sent) == 1:
            raise ConnectionError("broker gone")
        sent.append(args[0])

    monkeypatch.setattr(tasks.poll, "apply_async", apply_async)
    ids = ["a", "b", "c", "d", "e"]
    with task_runtime(settings, monkeypatch):
        taken = worker_runtime.run(
            lambda rt: poll_leases.take(rt.redis, rt.keys, ids, "sweep-t", 60_000)
        )
        assert taken == ids
        with pytest.raises(ConnectionError):
            tasks._enqueue([["a", "b"], ["c", "d"], ["e"]], "sweep-t")

        async def holders(rt: Any) -> list[Any]:
            redis: Redis = rt.redis
            return [await redis.get(rt.keys.poll_lease(wid)) for wid in ids]

        held = worker_runtime.run(holders)
    assert sent == [["a", "b"]]
    assert held == [b"sweep-t", b"sweep-t", None, None, None]
