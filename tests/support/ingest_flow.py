"""Helpers for push-path tests: register through the API, send heartbeats, wait (bounded), inspect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from sqlalchemy import select

from statusd.db import create_engine, reading
from statusd.keys import Keys
from statusd.models import Transition, Workload

T = Transition.__table__  # type: ignore[attr-defined]
W = Workload.__table__  # type: ignore[attr-defined]

Client = TestClient[Any, Any] | ClientSession


async def register(client: TestClient[Any, Any], wid: str, kind: str) -> str:
    """Register through the status API; returns the heartbeat token."""
    resp = await client.post("/v1/workloads", json={"id": wid, "kind": kind})
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["heartbeat_token"])


def hb_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {"Authorization": ""}


async def send(
    client: Client, url: str, token: str | None, wid: str, status: str, seq: int, **extra: Any
) -> tuple[int, dict[str, Any]]:
    body = {"workload_id": wid, "status": status, "seq": seq, **extra}
    async with client.post(url, json=body, headers=hb_headers(token)) as resp:
        return resp.status, dict(await resp.json())


async def wait_for(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109 - a polling deadline
    what: str = "condition",
    every: float = 0.1,
) -> None:
    """Poll `check` until true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def group_info(redis: Redis, keys: Keys) -> dict[str, Any]:
    for group in await redis.xinfo_groups(keys.heartbeats):
        name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
        if name == keys.consumer_group:
            return dict(group)
    return {}


async def drained(redis: Redis, keys: Keys) -> bool:
    """Every entry delivered to the group and acknowledged."""
    info = await group_info(redis, keys)
    return bool(info) and int(info["pending"]) == 0 and int(info.get("lag") or 0) == 0


class History:
    """Read transitions/workload rows straight from the database (what the consumers committed)."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url, pool_size=2)

    async def transitions(self, wid: str | None = None) -> list[dict[str, Any]]:
        query = select(
            T.c.workload_id, T.c.from_state, T.c.to_state, T.c.source, T.c.seq, T.c.reason
        ).order_by(T.c.id)
        if wid is not None:
            query = query.where(T.c.workload_id == wid)
        async with reading(self.engine) as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    async def states(self) -> dict[str, str]:
        async with reading(self.engine) as conn:
            rows = await conn.execute(select(W.c.id, W.c.state).where(W.c.deleted_at.is_(None)))
            return {r.id: str(r.state) for r in rows}

    async def close(self) -> None:
        await self.engine.dispose()
