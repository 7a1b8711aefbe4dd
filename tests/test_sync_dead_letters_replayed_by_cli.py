"""A permanent 4xx from the main API: dead-lettered with the response, visible in
`statusd sync status` (table and JSON) and outbox_stats, replayed by `statusd sync retry-dead`
after the fault is fixed. Real worker process, CLI as subprocesses, both databases."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable

import orjson

from statusd.lifecycle import State
from statusd.settings import Settings
from statusd.sync.status import outbox_stats, workload_synced
from tests.conftest import settings_env
from tests.support.main_api import FakeMainAPI
from tests.support.processes import statusd_command
from tests.support.sync_worker import (
    Workers,
    outbox_rows,
    produce,
    register_fleet,
    wait_outbox,
    walk,
)

pytest_plugins = ("tests.support.sync_fixtures",)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings), "COLUMNS": "200"}
    return subprocess.run(
        [*statusd_command(), "sync", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_rejected_transitions_are_dead_letters_until_replayed(
    main_api: FakeMainAPI,
    e2e_settings: Callable[..., Settings],
    runtime_for: Callable,
    workers: Workers,
) -> None:
    settings = e2e_settings()
    main_api.faults.reject = {"dep-bad": 422}
    await main_api.start()
    rt = await runtime_for(settings)
    workers.worker(settings)
    ids = ["dep-bad", "dep-ok-1", "dep-ok-2"]
    await register_fleet(rt.ledger, ids)
    produced = await produce(rt.ledger, ids)
    await wait_outbox(rt.ledger, 60, procs=workers.procs, what="nothing pending")

    dead = [r for r in await outbox_rows(rt.ledger) if r["status"] == "dead"]
    assert [r["transition_id"] for r in dead] == produced[
        "dep-bad"
    ]  # all five, none blocked the next
    assert {r["response_status"] for r in dead} == {422} and all(r["attempts"] == 1 for r in dead)
    assert main_api.accepted.get("dep-bad") is None
    assert main_api.accepted["dep-ok-1"] == produced["dep-ok-1"]
    stats = await outbox_stats(rt.engine)
    assert stats["dead_letters"] == 5 and stats["depth"] == 0
    assert not await workload_synced(rt.engine, "dep-bad")

    shown = cli(settings, "status", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    status = orjson.loads(shown.stdout)
    assert status["dead_letters"] == 5 and status["sync"] == "enabled"
    assert {row["workload_id"] for row in status["dead"]} == {"dep-bad"}
    assert all(
        row["response_status"] == 422 and "refused" in row["response_body"]
        for row in status["dead"]
    )
    table = cli(settings, "status")
    assert table.returncode == 0 and "dead letters" in table.stdout and "dep-bad" in table.stdout

    # Replay one by id first: only that one moves (the fault is still there, so it dies again).
    # The CLI runs off the event loop: the fake main API answers on this loop meanwhile (a
    # blocked loop times the worker's send out, and its retry makes two refusals of the row).
    again = await asyncio.to_thread(cli, settings, "retry-dead", "--id", str(dead[0]["id"]))
    assert again.returncode == 0 and "1 dead letter" in again.stdout
    replayed = ("dep-bad", dead[0]["transition_id"])
    await main_api.wait_until(
        lambda: main_api.rejected.count(replayed) >= 2, 60, "the replayed row refused again"
    )
    # Only that row moved: each of the other four was refused once, before the replay.
    assert sorted(r for r in main_api.rejected if r != replayed) == sorted(
        ("dep-bad", t) for t in produced["dep-bad"][1:]
    )
    await wait_outbox(rt.ledger, 30, what="replayed row settled")

    main_api.faults.reject = {}  # the main API team fixed it
    replay = await asyncio.to_thread(cli, settings, "retry-dead", "--workload", "dep-bad")
    assert replay.returncode == 0 and "5 dead letter" in replay.stdout, (
        replay.stdout + replay.stderr
    )
    await main_api.wait_until(
        lambda: len(main_api.accepted.get("dep-bad", [])) == 5, 60, "replayed in order"
    )
    assert main_api.accepted["dep-bad"] == produced["dep-bad"] and main_api.violations == []
    await wait_outbox(rt.ledger, 30, what="replay recorded")
    assert await workload_synced(rt.engine, "dep-bad")
    assert (await outbox_stats(rt.engine))["dead_letters"] == 0

    # A new transition after the replay syncs normally.
    await walk(rt.ledger, "dep-bad", [State.STOPPING], seq_start=6)
    await main_api.wait_until(
        lambda: len(main_api.accepted["dep-bad"]) == 6, 30, "new transition synced"
    )
