"""Helpers for push-path tests: register through the API, send heartbeats, wait (bounded), inspect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import select

from statusd.db import create_engine, reading
from statusd.ingest.streams import shard_of, stream_stats
from statusd.keys import Keys
from statusd.models import TransitionRow, WorkloadRow
from statusd.settings import Settings
from tests.support.processes import ManagedProcess, start_statusd

T = TransitionRow.__table__  # type: ignore[attr-defined]
W = WorkloadRow.__table__  # type: ignore[attr-defined]

Client = TestClient[Any, Any] | ClientSession


def start_consumer(settings: Settings, name: str, log_dir: Path, **env: str) -> ManagedProcess:
    """A real `statusd consume` process (one consumer) with exactly these settings."""
    from tests.conftest import settings_env

    return start_statusd(
        ["consume", "--consumers", "1", "--name", name],
        env={**settings_env(settings), **env},
        log_dir=log_dir,
    )


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


SHARDS = int(Settings.model_fields["stream_shards"].default)  # what make_settings() uses


def shard_stream(keys: Keys, workload_id: str, shards: int = SHARDS) -> str:
    """The shard stream a workload's heartbeats go to."""
    return keys.heartbeat_shard(shard_of(workload_id, shards))


async def stream_length(redis: Redis, keys: Keys, shards: int = SHARDS) -> int:
    """Entries in all shard streams."""
    return (await stream_stats(redis, keys, shards)).length


async def all_entries(
    redis: Redis, keys: Keys, shards: int = SHARDS
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of every shard, in id (arrival) order."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = []
    for i in range(shards):
        entries.extend(await redis.xrange(keys.heartbeat_shard(i)))
    return sorted(entries, key=lambda e: tuple(int(x) for x in e[0].split(b"-")))


async def pending_by_consumer(redis: Redis, keys: Keys, shards: int = SHARDS) -> dict[str, int]:
    """Pending (delivered, unacked) entries per consumer name, summed over the shards."""
    totals: dict[str, int] = {}
    for i in range(shards):
        try:
            summary = await redis.xpending(keys.heartbeat_shard(i), keys.consumer_group)
        except ResponseError:  # no stream/group on this shard yet
            continue
        for row in summary.get("consumers") or []:
            name = row["name"].decode() if isinstance(row["name"], bytes) else row["name"]
            totals[name] = totals.get(name, 0) + int(row["pending"])
    return totals


async def lease_owners(redis: Redis, keys: Keys, shards: int = SHARDS) -> dict[int, str]:
    """Shard -> consumer name holding its lease (the lease value is `name/incarnation`)."""
    values = await redis.mget([keys.shard_lease(i) for i in range(shards)])
    return {i: v.decode().rsplit("/", 1)[0] for i, v in enumerate(values) if v is not None}


def workloads_on_shards(shards: int, per_shard: int, prefix: str = "w") -> dict[int, list[str]]:
    """`per_shard` workload ids landing on each shard (ids found by trying names in order)."""
    found: dict[int, list[str]] = {i: [] for i in range(shards)}
    n = 0
    while any(len(ids) < per_shard for ids in found.values()):
        wid = f"{prefix}{n}"
        ids = found[shard_of(wid, shards)]
        if len(ids) < per_shard:
            ids.append(wid)
        n += 1
    return found


async def drained(redis: Redis, keys: Keys, shards: int = SHARDS) -> bool:
    """Every entry of every shard delivered to the group and acknowledged."""
    stats = await stream_stats(redis, keys, shards)
    return stats.lag == 0 and stats.pending == 0


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
