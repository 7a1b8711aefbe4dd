"""A broker failure part way through a sweep's enqueuing gives back the leases of the chunks that
were not sent (else those workloads would wait a whole lease TTL unpolled)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from statusd.sweeper import tasks


def test_unsent_chunks_release_their_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[list[str]] = []
    released: list[tuple[list[str], str]] = []

    def apply_async(args: list[Any]) -> None:
        if len(sent) == 1:
            raise ConnectionError("broker gone")
        sent.append(args[0])

    async def release(redis: Any, keys: Any, ids: list[str], token: str, keep_ms: int = 0) -> int:
        released.append((list(ids), token))
        return len(ids)

    def run(fn: Callable[[Any], Awaitable[Any]]) -> Any:
        class Rt:
            redis = keys = None

        return asyncio.run(fn(Rt()))  # type: ignore[arg-type]

    monkeypatch.setattr(tasks.poll, "apply_async", apply_async)
    monkeypatch.setattr(tasks.leases, "release", release)
    monkeypatch.setattr(tasks.worker_runtime, "run", run)
    with pytest.raises(ConnectionError):
        tasks._enqueue([["a", "b"], ["c", "d"], ["e"]], "sweep-t")
    assert sent == [["a", "b"]]
    assert released == [(["c", "d", "e"], "sweep-t")]
