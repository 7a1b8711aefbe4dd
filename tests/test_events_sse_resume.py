"""GET /v1/events: committed transitions as SSE, resumable with Last-Event-ID without gaps.

Includes the PostgreSQL trap: ids are taken at INSERT but transactions commit out of order, so a
reader that moves past a committed id can skip a smaller one that commits later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, ClientSession, web
from aiohttp.test_utils import TestClient
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection

from statusd.app_keys import RUNTIME
from statusd.lifecycle import Kind, Source, State
from statusd.models import TransitionRow, utcnow
from statusd.oncall.feed import HighWater
from statusd.oncall.sse import HUB
from statusd.registry import register
from statusd.runtime import Runtime
from statusd.settings import Settings
from statusd.transitions import Observation, apply_observation
from tests.support.api_client import api_client, in_process_app
from tests.support.processes import free_port

DEADLINE_S = 20.0
_T = TransitionRow.__table__  # type: ignore[attr-defined]


class EventReader:
    """Reads `id:/event:/data:` blocks from a live SSE response."""

    def __init__(self, resp: ClientResponse) -> None:
        self.resp = resp

    async def next_event(self, deadline_s: float = DEADLINE_S) -> dict[str, Any]:
        fields: dict[str, str] = {}
        end = time.monotonic() + deadline_s
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no event within {deadline_s}s")
            raw = await asyncio.wait_for(self.resp.content.readline(), remaining)
            if raw == b"":
                raise AssertionError("stream ended")
            line = raw.decode().rstrip("\n")
            if line == "":
                if "data" in fields:
                    return {
                        "id": int(fields["id"]),
                        "event": fields["event"],
                        "data": orjson.loads(fields["data"]),
                    }
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")

    async def take(self, n: int) -> list[dict[str, Any]]:
        return [await self.next_event() for _ in range(n)]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        yield c


def runtime_of(client: TestClient[Any, Any]) -> Runtime:
    return client.server.app[RUNTIME]


async def drive(rt: Runtime, wid: str, *states: State, seq0: int = 1) -> list[int]:
    ids = []
    for i, state in enumerate(states):
        result = await apply_observation(
            rt.ledger, Observation(wid, state, Source.PUSH, seq=seq0 + i)
        )
        assert result.transition is not None
        ids.append(result.transition.id)
    return ids


async def test_stream_delivers_committed_transitions(client: TestClient[Any, Any]) -> None:
    rt = runtime_of(client)
    await register(rt.engine, "t1", Kind.TRAINING)
    async with client.get("/v1/events") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        reader = EventReader(resp)
        ids = await drive(rt, "t1", State.STARTING, State.RUNNING)
        events = await reader.take(2)
    assert [e["id"] for e in events] == ids
    first = events[0]
    assert first["event"] == "transition"
    assert {
        k: first["data"][k] for k in ("id", "workload_id", "kind", "from", "to", "source", "seq")
    } == {
        "id": ids[0],
        "workload_id": "t1",
        "kind": "training",
        "from": "PENDING",
        "to": "STARTING",
        "source": "push",
        "seq": 1,
    }
    assert first["data"]["recorded_at"] and "reason" in first["data"]


async def test_reconnect_with_last_event_id_misses_nothing(client: TestClient[Any, Any]) -> None:
    rt = runtime_of(client)
    await register(rt.engine, "d1", Kind.DEPLOYMENT)
    async with client.get("/v1/events") as resp:
        seen = await _collect_while(resp, drive(rt, "d1", State.DEPLOYING, State.READY), 2)
    # Disconnected: these happen while nobody listens.
    missed = await drive(rt, "d1", State.DEGRADED, State.READY, State.DEGRADED, seq0=3)
    async with client.get("/v1/events", headers={"Last-Event-ID": str(seen[-1]["id"])}) as resp:
        resumed = await EventReader(resp).take(3)
    assert [e["id"] for e in resumed] == missed
    assert [e["data"]["to"] for e in resumed] == ["DEGRADED", "READY", "DEGRADED"]
    # The query-parameter form (for clients that cannot set headers) resumes the same way.
    async with client.get(f"/v1/events?last_event_id={seen[0]['id']}") as resp:
        again = await EventReader(resp).take(4)
    assert [e["id"] for e in again] == [seen[1]["id"], *missed]


async def test_filters_by_kind_and_workload(client: TestClient[Any, Any]) -> None:
    rt = runtime_of(client)
    for wid, kind in (("n1", Kind.NOTEBOOK), ("n2", Kind.NOTEBOOK), ("t9", Kind.TRAINING)):
        await register(rt.engine, wid, kind)
    async with (
        client.get("/v1/events?kind=notebook&last_event_id=0") as by_kind,
        client.get("/v1/events?workload_id=n2&last_event_id=0") as by_id,
    ):
        await drive(rt, "t9", State.RUNNING)
        await drive(rt, "n1", State.READY)
        await drive(rt, "n2", State.READY, State.IDLE)
        notebooks = await EventReader(by_kind).take(3)
        n2 = await EventReader(by_id).take(2)
    assert [e["data"]["workload_id"] for e in notebooks] == ["n1", "n2", "n2"]
    assert [e["data"]["to"] for e in n2] == ["READY", "IDLE"]
    bad = await client.get("/v1/events?kind=robot")
    assert bad.status == 400 and (await bad.json())["field"] == "kind"
    unauthorized = await client.get("/v1/events", headers={"Authorization": "Bearer nope"})
    assert unauthorized.status == 401


async def test_shutdown_ends_open_streams_promptly(settings: Settings) -> None:
    """App shutdown ends streams itself instead of waiting out the 60 s handler timeout."""
    app = in_process_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=60.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    try:
        async with ClientSession() as session:
            async with session.get(
                f"http://127.0.0.1:{port}/v1/events", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                assert resp.status == 200
                assert await resp.content.readline() == b"retry: 2000\n"
                await asyncio.wait_for(runner.cleanup(), DEADLINE_S)  # well under 60 s
                rest = await asyncio.wait_for(resp.content.read(), DEADLINE_S)
                assert rest in (b"", b"\n")  # the server finished the response cleanly
                assert not app[HUB].streams
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_db_down_at_hub_start_is_503_then_the_stream_starts_from_now(
    client: TestClient[Any, Any], database_url: str
) -> None:
    """Unknown high-water mark: 503, never "0" (which would replay the whole history)."""
    rt = runtime_of(client)
    await register(rt.engine, "h1", Kind.TRAINING)
    history = await drive(rt, "h1", State.STARTING, State.RUNNING)
    path = Path(database_url.split("///", 1)[1])
    away = path.with_name(path.name + ".away")
    # Pooled connections would keep reading the moved file, and SQLite refuses writes on a
    # connection that saw its file moved: none opened before or during the move is used after it.
    await rt.engine.dispose()
    await asyncio.to_thread(path.rename, away)
    await rt.engine.dispose()
    try:
        for url in ("/v1/events", "/v1/reports/transitions"):
            async with client.get(url) as down:
                assert down.status == 503, f"{url}: {down.status}"
                assert (await down.json())["error"] == "database_unavailable"
    finally:
        await asyncio.to_thread(away.rename, path)
        await rt.engine.dispose()
    hub = client.server.app[HUB]
    deadline = time.monotonic() + DEADLINE_S
    while hub.high_water.mark is None:  # the hub retries on its own
        assert time.monotonic() < deadline, "the hub never established the high-water mark"
        await asyncio.sleep(0.05)
    recent = await client.get("/v1/reports/transitions")
    assert recent.status == 200 and (await recent.json())["last_id"] == history[-1]
    async with client.get("/v1/events") as resp:
        assert resp.status == 200
        reader = EventReader(resp)
        new = await drive(rt, "h1", State.SUCCEEDED, seq0=3)
        events = await reader.take(1)
    assert [e["id"] for e in events] == new  # from "now": the history is not replayed


async def _collect_while(resp: ClientResponse, action: Any, n: int) -> list[dict[str, Any]]:
    reader = EventReader(resp)
    await action
    return await reader.take(n)


# -- PostgreSQL: out-of-order commits -------------------------------------------------------------


async def _hold_transition(conn: AsyncConnection, wid: str) -> int:
    """What apply_observation does, minus the commit: UPDATE the workload (takes an xid), INSERT."""
    await conn.execute(text("UPDATE workloads SET version = version WHERE id = :id"), {"id": wid})
    now = utcnow()
    row = await conn.execute(
        insert(_T)
        .values(
            workload_id=wid,
            generation=1,
            kind=Kind.TRAINING,
            from_state=State.PENDING,
            to_state=State.RUNNING,
            source=Source.PUSH,
            seq=1,
            observed_at=now,
            recorded_at=now,
        )
        .returning(_T.c.id)
    )
    return int(row.scalar_one())


# Only PostgreSQL commits ids out of order; SQLite serializes writers, so there is no SQLite variant.
postgres_only = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@postgres_only
async def test_high_water_waits_for_a_smaller_id_that_commits_late(
    client: TestClient[Any, Any],
) -> None:
    rt = runtime_of(client)
    for wid in ("slow", "fast", "after"):
        await register(rt.engine, wid, Kind.TRAINING)
    hw = HighWater(rt.engine)
    start = await hw.advance()
    async with rt.engine.connect() as held:
        trans = await held.begin()
        slow_id = await _hold_transition(held, "slow")
        [fast_id] = await drive(rt, "fast", State.RUNNING)  # commits first, with the larger id
        assert fast_id > slow_id
        assert await hw.advance() == start == slow_id - 1  # not past the uncommitted smaller id
        await trans.commit()
    assert await hw.advance() == fast_id


@postgres_only
async def test_high_water_skips_a_rolled_back_id(client: TestClient[Any, Any]) -> None:
    rt = runtime_of(client)
    for wid in ("doomed", "fine"):
        await register(rt.engine, wid, Kind.TRAINING)
    hw = HighWater(rt.engine)
    await hw.advance()
    async with rt.engine.connect() as held:
        trans = await held.begin()
        doomed_id = await _hold_transition(held, "doomed")
        [fine_id] = await drive(rt, "fine", State.RUNNING)
        assert await hw.advance() == doomed_id - 1
        await trans.rollback()
    # The gap is a rollback: skipped once every transaction that was in flight when it was first
    # seen has ended (on a shared server, other sessions' transactions may still be finishing).
    deadline = time.monotonic() + DEADLINE_S
    while await hw.advance() != fine_id:
        assert time.monotonic() < deadline, f"stuck at {hw.mark}, gaps {sorted(hw.gaps)}"
        await asyncio.sleep(0.05)


@postgres_only
async def test_sse_client_gets_both_in_id_order_after_out_of_order_commit(
    client: TestClient[Any, Any],
) -> None:
    rt = runtime_of(client)
    hub = client.server.app[HUB]
    for wid in ("slow", "fast"):
        await register(rt.engine, wid, Kind.TRAINING)
    async with rt.engine.connect() as held:
        trans = await held.begin()
        async with client.get("/v1/events") as resp:
            assert resp.status == 200
            slow_id = await _hold_transition(held, "slow")
            [fast_id] = await drive(rt, "fast", State.RUNNING)
            # Deterministic: wait until the server has SEEN the committed larger id and is
            # holding it back behind the gap; a naive `id > cursor` reader would have sent it.
            deadline = time.monotonic() + DEADLINE_S
            while slow_id not in hub.high_water.gaps:
                assert time.monotonic() < deadline, "the hub never saw the gap"
                await asyncio.sleep(0.05)
            assert (hub.high_water.mark or 0) < slow_id
        # Disconnected before anything was sent; the held transaction now commits.
        await trans.commit()
    async with client.get("/v1/events", headers={"Last-Event-ID": str(slow_id - 1)}) as resp:
        events = await EventReader(resp).take(2)
    assert [e["id"] for e in events] == [slow_id, fast_id]
    assert [e["data"]["workload_id"] for e in events] == ["slow", "fast"]
