"""A training driven through its lifecycle by statusd-client against a real `statusd serve`.

STARTING -> RUNNING -> SUCCEEDED, each visible in the API history with source `push`, on SQLite
and PostgreSQL, with the thread (`Heartbeater`) and the asyncio (`AsyncHeartbeater`) variants.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from statusd_client import AsyncHeartbeater, Heartbeater

from statusd.settings import Settings
from tests.support.client_stack import PlatformAPI, running_serve

PUSHED = [
    ("STARTING", "push", None),
    ("RUNNING", "push", "epoch 1/2"),
    ("SUCCEEDED", "push", None),
]


@pytest.fixture
def fast_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(consumer_block_ms=100)


def _pushed(api: PlatformAPI, workload_id: str) -> list[tuple[str, str, str | None]]:
    return [step for step in api.history(workload_id) if step[1] == "push"]


def test_heartbeater_from_env_walks_a_training_to_succeeded(
    fast_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_serve(fast_settings, tmp_path) as api:
        token = api.register("train-sync")
        monkeypatch.setenv("STATUSD_URL", api.url)
        monkeypatch.setenv("STATUSD_WORKLOAD_ID", "train-sync")
        monkeypatch.setenv("STATUSD_HEARTBEAT_TOKEN", token)
        with Heartbeater.from_env(interval=0.2, handle_sigterm=False) as hb:
            hb.set("STARTING")
            api.wait_state("train-sync", "STARTING")
            hb.set("RUNNING", "epoch 1/2")
            api.wait_state("train-sync", "RUNNING")
            hb.set("SUCCEEDED")
        # Leaving the block sent SUCCEEDED once more; it is applied once all the same.
        api.wait_state("train-sync", "SUCCEEDED")
        assert _pushed(api, "train-sync") == PUSHED
        assert hb.last_refusal is None


async def test_async_heartbeater_walks_a_training_to_succeeded(
    fast_settings: Settings, tmp_path: Path
) -> None:
    with running_serve(fast_settings, tmp_path) as api:
        token = await asyncio.to_thread(api.register, "train-async")
        async with AsyncHeartbeater(api.url, "train-async", token, interval=0.2) as hb:
            for status, detail in (("STARTING", None), ("RUNNING", "epoch 1/2")):
                hb.set(status, detail)
                await asyncio.to_thread(api.wait_state, "train-async", status)
            hb.set("SUCCEEDED")
        await asyncio.to_thread(api.wait_state, "train-async", "SUCCEEDED")
        assert await asyncio.to_thread(_pushed, api, "train-async") == PUSHED
