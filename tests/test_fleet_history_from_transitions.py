"""The fleet picture: counts by state at each sample time, rebuilt backward from the transition
history. Pure cases first (no I/O), then the same reconstruction read from real SQLite and
PostgreSQL, then GET /v1/reports/history's bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from statusd.db import create_engine
from statusd.lifecycle import Kind, State
from statusd.models import TransitionRow, WorkloadRow
from statusd.oncall.fleet_history import (
    Move,
    WorkloadNow,
    fleet_history,
    reconstruct,
    sample_times,
)
from statusd.registry import deregister
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.history import record_story

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
_W = WorkloadRow.__table__  # type: ignore[attr-defined]
_T = TransitionRow.__table__  # type: ignore[attr-defined]


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def at(samples: list[Any], minutes_ago: float) -> dict[State, int]:
    wanted = ago(minutes_ago)
    return next(s.counts for s in samples if s.at == wanted)


def test_sample_times_end_now_and_step_back() -> None:
    times = sample_times(NOW, 3600, 60)
    assert len(times) == 61 and times[-1] == NOW and times[0] == ago(60)
    assert all(b - a == timedelta(minutes=1) for a, b in zip(times, times[1:], strict=False))


def test_moves_are_undone_backward_and_each_workload_counts_only_while_it_existed() -> None:
    workloads = [
        # registered 2h ago, RUNNING 50m ago, UNREACHABLE 20m ago, LOST 5m ago
        WorkloadNow("a", State.LOST, ago(120)),
        # registered 30m ago, still PENDING
        WorkloadNow("b", State.PENDING, ago(30)),
        # registered 2h ago, READY 40m ago, deregistered 10m ago
        WorkloadNow("c", State.READY, ago(120), deleted_at=ago(10)),
    ]
    moves = [
        Move("a", State.PENDING, State.RUNNING, ago(50)),
        Move("a", State.RUNNING, State.UNREACHABLE, ago(20)),
        Move("a", State.UNREACHABLE, State.LOST, ago(5)),
        Move("c", State.PENDING, State.READY, ago(40)),
    ]
    samples = reconstruct(workloads, moves, sample_times(NOW, 3600, 60))
    assert at(samples, 60) == {State.PENDING: 2}  # a and c; b did not exist yet
    assert at(samples, 45) == {State.RUNNING: 1, State.PENDING: 1}
    assert at(samples, 30) == {State.RUNNING: 1, State.READY: 1, State.PENDING: 1}
    assert at(samples, 15) == {State.UNREACHABLE: 1, State.READY: 1, State.PENDING: 1}
    assert at(samples, 0) == {State.LOST: 1, State.PENDING: 1}  # c is gone
    # A move at exactly a sample instant has happened by then.
    assert at(samples, 20)[State.UNREACHABLE] == 1


def test_moves_at_the_same_instant_are_undone_newest_first() -> None:
    # Two moves recorded in the same microsecond (one request): the later id is undone first.
    workloads = [WorkloadNow("a", State.SUCCEEDED, ago(10))]
    moves = [
        Move("a", State.PENDING, State.RUNNING, ago(5)),
        Move("a", State.RUNNING, State.SUCCEEDED, ago(5)),
    ]
    samples = reconstruct(workloads, moves, [ago(6), ago(5)])
    assert [s.counts for s in samples] == [{State.PENDING: 1}, {State.SUCCEEDED: 1}]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Any]:
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


async def _story(engine: Any, wid: str, kind: Kind, created: datetime, path: list[State]) -> None:
    """Register `wid` at `created`, then one move per 10 minutes along `path`."""
    moves = [(created + timedelta(minutes=10 * (i + 1)), s) for i, s in enumerate(path)]
    await record_story(engine, wid, kind, created, moves)


async def test_history_read_from_the_database_matches_the_stories(engine: Any) -> None:
    await _story(engine, "train-1", Kind.TRAINING, ago(45), [State.RUNNING, State.SUCCEEDED])
    await _story(engine, "dep-1", Kind.DEPLOYMENT, ago(35), [State.DEPLOYING, State.READY])
    await _story(engine, "gone-1", Kind.NOTEBOOK, ago(90), [])
    await deregister(engine, "gone-1")  # deregistered now: counted until now, gone at now
    # Quiet through the window (its only move is older): counted by the database's GROUP BY.
    await _story(engine, "old-1", Kind.TRAINING, ago(130), [State.RUNNING])
    samples = await fleet_history(engine, now=NOW, window_s=3600, step_s=300)
    assert len(samples) == 13
    assert at(samples, 60) == {State.PENDING: 1, State.RUNNING: 1}  # gone-1 and old-1
    assert at(samples, 40) == {State.PENDING: 2, State.RUNNING: 1}  # train-1 registered 45m ago
    # dep-1 registered 35m ago; train-1 RUNNING since 35m ago
    assert at(samples, 30) == {State.RUNNING: 2, State.PENDING: 2}
    assert at(samples, 20) == {
        State.SUCCEEDED: 1,
        State.DEPLOYING: 1,
        State.PENDING: 1,
        State.RUNNING: 1,
    }
    # deregister() stamped deleted_at with the real clock, after NOW: still counted at NOW.
    assert at(samples, 0) == {
        State.SUCCEEDED: 1,
        State.READY: 1,
        State.PENDING: 1,
        State.RUNNING: 1,
    }

    by_kind = await fleet_history(engine, now=NOW, window_s=3600, step_s=300, kind=Kind.DEPLOYMENT)
    assert at(by_kind, 30) == {State.PENDING: 1} and at(by_kind, 0) == {State.READY: 1}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with api_client(settings) as c:
        yield c


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("window=soon", "window"),
        ("window=0", "window"),
        ("step=-5", "step"),
        ("window=30d", "window"),
        ("window=1h&step=1s", "step"),
        ("kind=spaceship", "kind"),
        ("colour=red", "colour"),
    ],
)
async def test_bad_history_queries_are_400s_naming_the_parameter(
    client: TestClient[Any, Any], query: str, field: str
) -> None:
    resp = await client.get(f"/v1/reports/history?{query}")
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["field"] == field


async def test_history_endpoint_shape(client: TestClient[Any, Any]) -> None:
    body = await (await client.get("/v1/reports/history?window=10m&step=1m")).json()
    assert body["window_s"] == 600 and body["step_s"] == 60 and len(body["samples"]) == 11
    assert body["states"] == [] and all(s["counts"] == {} for s in body["samples"])
