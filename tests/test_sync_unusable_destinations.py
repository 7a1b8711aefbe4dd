"""A destination that can never work is a dead letter at once, not a row retried forever.

Rows with such URLs can only predate the settings check (or come from a hand-edited outbox): the
check itself refuses them at startup, naming the variable. Both databases, in-process drain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from pydantic import ValidationError

from statusd.db import create_engine
from statusd.lifecycle import Source, State
from statusd.models import OutboxStatus, OutboxTarget
from statusd.settings import Settings
from statusd.sync.delivery import DeliveryVerdict, TransientDeliveryError, verdict_for
from statusd.sync.drain import drain
from statusd.transitions import Ledger, Observation, apply_observation
from tests.support.sync_worker import outbox_rows, register_fleet, walk

UNUSABLE = ("http://", "ftp://hooks.example/alert", "example.com/hook")


@pytest.fixture
async def ledger(make_settings: Callable[..., Settings]) -> AsyncIterator[Ledger]:
    engine = create_engine(make_settings().database_url, pool_size=5)
    yield Ledger(engine=engine, alert_webhooks=UNUSABLE)
    await engine.dispose()


async def test_an_unusable_webhook_url_is_dead_lettered_without_retrying(
    ledger: Ledger, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(sync_attempts=5, sync_budget=5.0)
    await register_fleet(ledger, ["d"])
    await walk(ledger, "d", [State.DEPLOYING, State.READY])
    await apply_observation(
        ledger, Observation("d", State.UNREACHABLE, Source.SWEEPER, reason="no heartbeat")
    )
    report = await drain(ledger.engine, settings)
    assert report.dead == len(UNUSABLE) and report.deferred == 0
    rows = await outbox_rows(ledger, target=OutboxTarget.ALERT)
    assert sorted(r["destination"] for r in rows) == sorted(UNUSABLE)
    for r in rows:
        assert r["status"] == OutboxStatus.DEAD and r["attempts"] == 1, r
        assert r["last_error"].startswith("permanent:") and r["response_status"] is None


def test_one_status_rule_for_every_peer() -> None:
    for status in (408, 429, 500, 503):
        with pytest.raises(TransientDeliveryError):
            verdict_for("webhook", status, "")
    assert verdict_for("webhook", 404, "").verdict is DeliveryVerdict.DEAD
    assert verdict_for("webhook", 409, "").verdict is DeliveryVerdict.DEAD
    assert (
        verdict_for("main API", 409, "", also_delivered=(409,)).verdict is DeliveryVerdict.DELIVERED
    )
    assert verdict_for("webhook", 204, "").verdict is DeliveryVerdict.DELIVERED


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STATUSD_ALERT_WEBHOOKS", "https://hooks.example/ok,example.com/hook"),
        ("STATUSD_ALERT_WEBHOOKS", "http://"),
        ("STATUSD_MAIN_API_URL", "example.com/hook"),
        ("STATUSD_MAIN_API_URL", "ftp://main.example/api"),
    ],
)
def test_settings_refuse_a_destination_that_is_not_an_http_url(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_settings_accept_http_destinations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATUSD_ALERT_WEBHOOKS", "https://hooks.example/a, http://10.0.0.5:8080/b")
    monkeypatch.setenv("STATUSD_MAIN_API_URL", "http://main.internal:9000/api")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.alert_webhooks == ["https://hooks.example/a", "http://10.0.0.5:8080/b"]
