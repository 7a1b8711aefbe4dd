"""statusd-client's `parent` and `suppressed_by` against a real `statusd serve`, on SQLite and
PostgreSQL: register a node agent, its containers with register_many (an unknown parent is that
item's BadInput naming `parent`), and read both fields back once the agent is UNREACHABLE."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from statusd_client import BadInput, Registration, StatusdApi

from statusd.db import create_engine
from statusd.lifecycle import Source, State
from statusd.settings import Settings
from statusd.transitions import Ledger, Observation, apply_observation
from tests.conftest import TEST_API_TOKEN
from tests.support.client_stack import running_serve


def test_parent_and_suppressed_by_round_trip(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(consumer_block_ms=100)
    with (
        running_serve(settings, tmp_path) as server,
        StatusdApi(server.url, TEST_API_TOKEN) as api,
    ):
        agent = api.register("node-9", "deployment")
        assert agent.workload.parent is None and agent.workload.suppressed_by is None
        with pytest.raises(BadInput) as refused:
            api.register("node-9.a", "training", parent="node-9.a")
        assert refused.value.field == "parent"

        results = api.register_many(
            [
                Registration("node-9.a", "training", parent="node-9"),
                {"id": "node-9.b", "kind": "training", "parent": "node-9"},
                Registration("node-9.c", "training", parent="node-10"),
            ]
        )
        assert [r.status for r in results] == [201, 201, 422]
        assert results[0].unwrap().workload.parent == "node-9"
        error = results[2].error
        assert isinstance(error, BadInput) and error.field == "parent"

        # Only the sweeper assigns UNREACHABLE: do what it does, through the one writer.
        asyncio.run(lose(settings.database_url, "node-9"))
        child = api.get("node-9.a")
        assert child.parent == "node-9" and child.suppressed_by == "node-9"
        listed = {w.id: w.suppressed_by for w in api.list(id_prefix="node-9")}
        assert listed == {"node-9": None, "node-9.a": "node-9", "node-9.b": "node-9"}


async def lose(database_url: str, workload_id: str) -> None:
    engine = create_engine(database_url)
    try:
        ledger = Ledger(engine=engine)
        await apply_observation(ledger, Observation(workload_id, State.READY, Source.PUSH, seq=1))
        await apply_observation(ledger, Observation(workload_id, State.UNREACHABLE, Source.SWEEPER))
    finally:
        await engine.dispose()
