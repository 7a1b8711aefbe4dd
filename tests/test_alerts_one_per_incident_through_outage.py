"""Alert webhooks: one alert per incident (entering UNREACHABLE, entering LOST, recovery), however
many sweeps repeat the verdict; delivered through the retrying outbox drain so a webhook that is
down for a while still gets every alert; a webhook answering 404 is dead-lettered.
Real `statusd worker` + beat, real aiohttp receivers on loopback, both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from statusd.lifecycle import Source, State
from statusd.models import OutboxTarget
from statusd.settings import Settings
from statusd.sync.status import outbox_stats
from statusd.transitions import Ledger, Observation, Outcome, apply_observation
from tests.support.sync_worker import Workers, outbox_counts, register_fleet, wait_outbox
from tests.support.webhook_receiver import WebhookReceiver

pytest_plugins = ("tests.support.sync_fixtures",)


@pytest.fixture
async def hooks() -> AsyncIterator[tuple[WebhookReceiver, WebhookReceiver, WebhookReceiver]]:
    up, down, gone = (
        WebhookReceiver(path="/up"),
        WebhookReceiver(path="/down"),
        WebhookReceiver(path="/gone"),
    )
    up.error_ratio = 0.3  # flaky but up
    gone.reject_status = 404  # a deleted hook: permanent
    await up.start()
    await gone.start()
    yield up, down, gone
    for hook in (up, down, gone):
        await hook.stop()


async def sweep(ledger: Ledger, wid: str, state: State) -> Outcome:
    """What the sweeper does for a workload it cannot reach (through the one transition path)."""
    result = await apply_observation(
        ledger, Observation(wid, state, Source.SWEEPER, reason="no heartbeat")
    )
    return result.outcome


async def test_one_alert_per_incident_and_recovery_survive_a_webhook_outage(
    hooks: tuple[WebhookReceiver, WebhookReceiver, WebhookReceiver],
    e2e_settings: Callable[..., Settings],
    runtime_for: Callable,
    workers: Workers,
) -> None:
    up, down, gone = hooks
    settings = e2e_settings(main_api_url=None, alert_webhooks=[up.url, down.url, gone.url])
    rt = await runtime_for(settings)
    workers.worker(settings)
    workers.beat(settings)
    await register_fleet(rt.ledger, ["dep-a", "dep-b", "dep-calm"])
    for seq, wid in enumerate(("dep-a", "dep-b", "dep-calm"), start=1):
        await apply_observation(rt.ledger, Observation(wid, State.READY, Source.PUSH, seq=seq))

    # Twenty sweeps see dep-a and dep-b silent: one transition (and alert) each, then UNCHANGED.
    outcomes = [
        await sweep(rt.ledger, wid, State.UNREACHABLE)
        for _ in range(20)
        for wid in ("dep-a", "dep-b")
    ]
    assert outcomes.count(Outcome.APPLIED) == 2 and outcomes.count(Outcome.UNCHANGED) == 38
    outcomes = [await sweep(rt.ledger, "dep-a", State.LOST) for _ in range(20)]
    assert outcomes.count(Outcome.APPLIED) == 1
    await up.wait_for(3, 30)  # while the other hook is down
    # dep-a comes back (a heartbeat), dep-b too.
    await apply_observation(rt.ledger, Observation("dep-a", State.READY, Source.PUSH, seq=10))
    await apply_observation(rt.ledger, Observation("dep-b", State.DEGRADED, Source.PUSH, seq=10))
    await up.wait_for(5, 30)

    await asyncio.sleep(2)  # down "for a while": its rows are retried and deferred
    assert (await outbox_stats(rt.engine))["targets"]["alert"]["pending"] >= 1
    await down.start()
    await down.wait_for(5, 60)
    await wait_outbox(
        rt.ledger, 30, target=OutboxTarget.ALERT, procs=workers.procs, what="alerts settled"
    )
    await asyncio.sleep(2.5)  # more beat runs: still nothing new, nothing twice

    for hook in (up, down):
        assert len(hook.alerts) == 5, hook.alerts
        assert hook.events("dep-a") == ["unreachable", "lost", "recovered"]
        assert hook.events("dep-b") == ["unreachable", "recovered"]
        assert hook.events("dep-calm") == []
        assert len({a["transition_id"] for a in hook.alerts}) == 5
    lost = next(a for a in down.alerts if a["event"] == "lost")
    assert "dep-a" in lost["text"] and "LOST" in lost["text"] and "team-sync" in lost["text"]
    assert lost["labels"] == {"owner": "team-sync"} and lost["previous"] == "UNREACHABLE"
    assert up.requests > 5  # the flaky hook was retried

    counts = await outbox_counts(rt.ledger, OutboxTarget.ALERT)
    assert counts == {"pending": 0, "synced": 10, "dead": 5}  # the 404 hook: five dead letters
    stats = await outbox_stats(rt.engine, settings)
    assert stats["targets"]["alert"]["dead"] == 5 and stats["sync"] == "disabled"
    # Main-DB sync is disabled here: its rows are kept, not discarded.
    assert (await outbox_counts(rt.ledger, OutboxTarget.MAIN))["pending"] == 3 + 3 + 2
