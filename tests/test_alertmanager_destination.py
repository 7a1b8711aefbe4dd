"""Alertmanager as a destination, against the real Alertmanager (Debian's prometheus-alertmanager)
started on loopback with its webhook receiver pointed at a loopback aiohttp server.

Transitions go through the one lifecycle path (apply_observation), alert rows through the real
outbox drain (statusd.sync.drain), re-sends through the real re-send writer; both databases:
- a workload that dies reaches the receiver as a firing notification with statusd's labels and
  its own (names made valid); its recovery as a resolved one; two Alertmanagers both get it;
- a silence made in Alertmanager (its API) is honoured by Alertmanager;
- an Alertmanager killed and restarted mid-incident knows nothing, and the re-send restores the
  alert: it notifies again, and the recovery then resolves it there; once more through a real
  `statusd worker` and `statusd beat` (the beat task `statusd.alerts.resend`);
- statusd's disruption is one StatusdDisruption alert, re-sent while it lasts;
- README's copy-paste alertmanager.yml is one `amtool check-config` accepts.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from statusd.alert_routes import AlertRoutes, alertmanager_destination
from statusd.celery.application import beat_schedule
from statusd.celery.names import ALERT_RESEND_TASK
from statusd.db import create_engine
from statusd.keys import Keys
from statusd.lifecycle import Kind, Source, State
from statusd.models import OutboxStatus, OutboxTarget
from statusd.registry import register
from statusd.settings import Settings
from statusd.sweeper.disruption import enqueue_alert, record
from statusd.sync.alertmanager_resend import resend_firing
from statusd.sync.drain import drain
from statusd.transitions import Ledger, Observation, Outcome, apply_observation
from tests.support.alertmanager import Alertmanager, NotificationReceiver
from tests.support.sync_worker import Workers, outbox_rows

pytest_plugins = ("tests.support.sync_fixtures",)

LABELS = {"team": "vision", "app.kubernetes.io/name": "detector", "owner": "ml-infra"}


@pytest.fixture
async def hook() -> AsyncIterator[NotificationReceiver]:
    receiver = NotificationReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def pair(tmp_path: Path, hook: NotificationReceiver) -> AsyncIterator[list[Alertmanager]]:
    managers = [Alertmanager(tmp_path / f"am-{n}", hook.url(f"am-{n}")) for n in ("a", "b")]
    try:
        await asyncio.gather(*(am.start() for am in managers))
        yield managers
    finally:
        for am in managers:
            am.kill()


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(managers: list[Alertmanager], **overrides: object) -> Settings:
        return make_settings(
            alertmanager_urls=[am.base_url for am in managers],
            public_url="https://statusd.example",
            sync_timeout=1.0,
            sync_budget=2.0,
            sync_attempts=2,
            **overrides,
        )

    return make


@pytest.fixture
async def ledger_for() -> AsyncIterator[Callable[[Settings], Ledger]]:
    ledgers: list[Ledger] = []

    def make(settings: Settings) -> Ledger:
        engine = create_engine(settings.database_url, pool_size=5)
        ledger = Ledger(engine=engine, alert_webhooks=AlertRoutes.from_settings(settings))
        ledgers.append(ledger)
        return ledger

    yield make
    for ledger in ledgers:
        await ledger.engine.dispose()


async def observe(ledger: Ledger, wid: str, state: State, seq: int | None = None) -> None:
    source = Source.SWEEPER if state in (State.UNREACHABLE, State.LOST) else Source.PUSH
    result = await apply_observation(
        ledger, Observation(wid, state, source, seq=seq, reason="no heartbeat for 2 TTLs")
    )
    assert result.outcome is Outcome.APPLIED, result


async def start_fleet(ledger: Ledger, ids: list[str]) -> None:
    for wid in ids:
        await register(ledger.engine, wid, Kind.DEPLOYMENT, labels=LABELS)
        await observe(ledger, wid, State.READY, seq=1)


async def test_a_dying_workload_fires_in_both_alertmanagers_and_its_recovery_resolves(
    pair: list[Alertmanager],
    hook: NotificationReceiver,
    settings_for: Callable[..., Settings],
    ledger_for: Callable[[Settings], Ledger],
) -> None:
    settings = settings_for(pair)
    ledger = ledger_for(settings)
    await start_fleet(ledger, ["det-1", "det-quiet"])
    silence_id = await pair[0].silence("workload", "det-quiet", "planned migration")

    await observe(ledger, "det-1", State.UNREACHABLE)
    await observe(ledger, "det-quiet", State.UNREACHABLE)
    report = await drain(ledger.engine, settings)
    assert report.delivered == 4 and report.dead == 0  # two workloads x two Alertmanagers

    for path in ("am-a", "am-b"):
        alert = await hook.wait_for(path, "firing", "det-1")
        assert alert["labels"] == {
            "alertname": "StatusdWorkloadUnreachable",
            "workload": "det-1",
            "kind": "deployment",
            "severity": "warning",
            "team": "vision",
            "app_kubernetes_io_name": "detector",
            "owner": "ml-infra",
        }
        assert alert["annotations"]["summary"].startswith(
            "statusd: deployment `det-1` is UNREACHABLE"
        )
        assert "Reason: no heartbeat for 2 TTLs." in alert["annotations"]["description"]
        assert alert["generatorURL"] == "https://statusd.example/workloads/det-1"
    # Alertmanager b has no silence: it notifies det-quiet. Alertmanager a holds it as suppressed
    # by the silence made in its API, and its receiver never hears of it.
    await hook.wait_for("am-b", "firing", "det-quiet")
    held = [a for a in await pair[0].alerts() if a["labels"]["workload"] == "det-quiet"]
    assert [a["status"]["state"] for a in held] == ["suppressed"]
    assert held[0]["status"]["silencedBy"] == [silence_id]
    assert all(a["labels"]["workload"] != "det-quiet" for a in hook.alerts("am-a"))

    await observe(ledger, "det-1", State.READY, seq=2)
    report = await drain(ledger.engine, settings)
    assert report.delivered == 2 and report.dead == 0
    for path in ("am-a", "am-b"):
        resolved = await hook.wait_for(path, "resolved", "det-1")
        assert resolved["labels"]["alertname"] == "StatusdWorkloadUnreachable"
        firing = next(a for a in hook.alerts(path, "firing") if a["labels"]["workload"] == "det-1")
        assert resolved["startsAt"] == firing["startsAt"]  # the same alert, now ended


async def test_a_restarted_alertmanager_learns_the_incident_back_from_the_resend(
    tmp_path: Path,
    hook: NotificationReceiver,
    settings_for: Callable[..., Settings],
    ledger_for: Callable[[Settings], Ledger],
    redis: Redis,
) -> None:
    am = Alertmanager(tmp_path / "am", hook.url("am"))
    await am.start()
    try:
        settings = settings_for([am], alertmanager_resend_s=0.2)
        ledger = ledger_for(settings)
        keys = Keys(settings.redis_prefix, settings.stream_shards)
        await start_fleet(ledger, ["det-down", "det-back", "det-fine"])
        for wid in ("det-down", "det-back"):
            await observe(ledger, wid, State.UNREACHABLE)
        await observe(ledger, "det-down", State.LOST)
        await observe(ledger, "det-back", State.READY, seq=2)
        await drain(ledger.engine, settings)
        lost = await hook.wait_for("am", "firing", "det-down", alertname="StatusdWorkloadLost")
        assert lost["labels"]["severity"] == "critical"

        am.kill()  # a crash: Alertmanager keeps alerts in memory only
        await am.start()
        assert await am.alerts() == []

        await asyncio.sleep(settings.alertmanager_resend_s)
        # Only det-down's incident lasts: det-back recovered, det-fine never fired.
        assert await resend_firing(ledger.engine, redis, keys, settings) == 1
        resent = await outbox_rows(ledger, target=OutboxTarget.ALERT, status=OutboxStatus.PENDING)
        assert [(r["workload_id"], r["destination"]) for r in resent] == [
            ("det-down", alertmanager_destination(am.base_url))
        ]
        assert resent[0]["event_key"].startswith("resend:") and resent[0]["payload"]["resend"]
        # The re-send is pending: another run writes nothing behind it.
        assert await resend_firing(ledger.engine, redis, keys, settings) == 0
        await drain(ledger.engine, settings)
        renewed = await hook.wait_for(
            "am", "firing", "det-down", alertname="StatusdWorkloadLost", nth=2
        )
        assert renewed["labels"] == lost["labels"] and renewed["startsAt"] == lost["startsAt"]
        assert [a["labels"]["workload"] for a in await am.alerts()] == ["det-down"]
        # The next re-send replaces the delivered one: a long incident keeps one re-send row.
        await asyncio.sleep(settings.alertmanager_resend_s)
        assert await resend_firing(ledger.engine, redis, keys, settings) == 1
        await drain(ledger.engine, settings)
        rows = await outbox_rows(ledger, target=OutboxTarget.ALERT, workload_id="det-down")
        keys_left = [r["event_key"] for r in rows]
        assert len(keys_left) == 3 and keys_left[-1] == f"resend:{resent[0]['id']}", keys_left

        await observe(ledger, "det-down", State.READY, seq=3)
        await drain(ledger.engine, settings)
        resolved = await hook.wait_for(
            "am", "resolved", "det-down", alertname="StatusdWorkloadLost"
        )
        assert resolved["startsAt"] == lost["startsAt"]
        await asyncio.sleep(settings.alertmanager_resend_s)
        assert await resend_firing(ledger.engine, redis, keys, settings) == 0  # incident over
    finally:
        am.kill()


def test_beat_sends_the_resend_only_with_alertmanagers(
    make_settings: Callable[..., Settings],
) -> None:
    assert "alertmanager-resend" not in beat_schedule(make_settings())
    entry = beat_schedule(
        make_settings(alertmanager_urls=["http://am:9093"], alertmanager_resend_s=15)
    )["alertmanager-resend"]
    assert entry["task"] == ALERT_RESEND_TASK and entry["schedule"] == 15
    assert entry["options"]["queue"] == "sync"


async def test_a_disruption_is_one_statusd_alert_resent_while_it_lasts(
    tmp_path: Path,
    hook: NotificationReceiver,
    settings_for: Callable[..., Settings],
    ledger_for: Callable[[Settings], Ledger],
    redis: Redis,
) -> None:
    am = Alertmanager(tmp_path / "am", hook.url("am"))
    await am.start()
    try:
        settings = settings_for([am], alertmanager_resend_s=0.2)
        ledger = ledger_for(settings)
        keys = Keys(settings.redis_prefix, settings.stream_shards)
        destinations = AlertRoutes.from_settings(settings).for_statusd()

        flip = await record(redis, keys, True, 30, 40)  # what a sweep judging the fleet does
        assert flip is not None
        await enqueue_alert(ledger.engine, destinations, flip)
        await drain(ledger.engine, settings)
        (held,) = await am.alerts()
        assert held["labels"] == {"alertname": "StatusdDisruption", "severity": "critical"}

        await asyncio.sleep(settings.alertmanager_resend_s)
        assert await resend_firing(ledger.engine, redis, keys, settings) == 1  # it lasts
        await drain(ledger.engine, settings)

        flip = await record(redis, keys, False, 0, 40)
        assert flip is not None
        await enqueue_alert(ledger.engine, destinations, flip)
        await drain(ledger.engine, settings)
        await asyncio.sleep(settings.alertmanager_resend_s)
        assert await resend_firing(ledger.engine, redis, keys, settings) == 0  # it is over
        assert await am.alerts() == []  # the API lists no alert whose endsAt has passed
    finally:
        am.kill()


# The database side is the in-process tests' (both databases); this one is the process wiring.
@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_beat_and_worker_heal_a_restarted_alertmanager(
    tmp_path: Path,
    hook: NotificationReceiver,
    e2e_settings: Callable[..., Settings],
    runtime_for: Callable[[Settings], Any],
    workers: Workers,
) -> None:
    """The same incident through the deployed pieces: `statusd worker` drains and runs the
    re-send task that `statusd beat` sends every STATUSD_ALERTMANAGER_RESEND_S."""
    am = Alertmanager(tmp_path / "am", hook.url("am"))
    await am.start()
    try:
        settings = e2e_settings(
            main_api_url=None, alertmanager_urls=[am.base_url], alertmanager_resend_s=1.0
        )
        rt = await runtime_for(settings)
        workers.worker(settings)
        workers.beat(settings)
        await start_fleet(rt.ledger, ["det-e2e"])
        await observe(rt.ledger, "det-e2e", State.UNREACHABLE)
        first = await hook.wait_for("am", "firing", "det-e2e", within=60)

        am.kill()
        await am.start()  # knows nothing; beat's re-send tells it again
        renewed = await hook.wait_for("am", "firing", "det-e2e", nth=2, within=60)
        assert renewed["labels"] == first["labels"] and renewed["startsAt"] == first["startsAt"]

        await observe(rt.ledger, "det-e2e", State.READY, seq=2)
        await hook.wait_for("am", "resolved", "det-e2e", within=60)
    finally:
        am.kill()


def test_the_readme_alertmanager_config_is_one_alertmanager_accepts(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Alertmanager") : readme.index("### Receivers")]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    config = tmp_path / "alertmanager.yml"
    config.write_text(block)
    amtool = shutil.which("amtool")
    assert amtool, "amtool comes with prometheus-alertmanager: `make system-deps`"
    checked = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 inhibit rules" in checked.stdout and "2 receivers" in checked.stdout
