"""STATUSD_ALERT_RECEIVERS: formats, routing by `match`, templates, and the start-up check.

Transitions go through the one lifecycle path (apply_observation) and alert rows through the real
outbox drain (statusd.sync.drain) to a real aiohttp server on loopback; both databases:
- PagerDuty: trigger and resolve bodies of one incident carry the same dedup_key, and every field
  is checked against the Events API v2 contract (routing_key, event_action, dedup_key <= 255,
  payload.summary <= 1024, payload.source, payload.severity in critical/error/warning/info, ...);
- routing: team vision's alerts reach only team vision's PagerDuty, team speech's only speech's;
  a receiver without `match` takes everything;
- Opsgenie (create, close by alias), Teams (MessageCard) and generic shapes;
- a custom template renders in the sandbox; a broken one (syntax, sandbox escape) is a dead letter
  with its error, and the other receivers still get their alerts;
- a bad receiver list stops start-up with one line naming the entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from statusd.alert_routes import AlertRoutes
from statusd.db import create_engine
from statusd.errors import ConfigError
from statusd.lifecycle import Kind, Source, State
from statusd.metrics import ALERTS_SENT
from statusd.models import OutboxStatus, OutboxTarget
from statusd.registry import register
from statusd.settings import Settings
from statusd.settings_loader import load_settings
from statusd.sync.drain import drain
from statusd.transitions import Ledger, Observation, Outcome, apply_observation
from tests.support.loopback import LoopbackServer
from tests.support.sync_worker import outbox_rows

VISION_KEY = "v" * 32
SPEECH_KEY = "s" * 32
PD_TOP = {"routing_key", "event_action", "dedup_key", "payload", "client", "client_url", "links"}
PD_PAYLOAD = {
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
}
PD_SEVERITIES = {"critical", "error", "warning", "info"}

GOOD_TEMPLATE = """{
  "title": {{ (alert.status | upper ~ " " ~ alert.workload.id) | tojson }},
  "severity": {{ alert.severity | tojson }},
  "page": {{ alert.url | tojson }},
  "team": {{ alert.workload.labels.team | tojson }},
  "to": {{ receiver | tojson }}
}
"""
BROKEN_TEMPLATE = '{"text": "{{ alert.summary "}\n'
ESCAPE_TEMPLATE = "{{ alert.__class__.__mro__ }}\n"


@dataclass
class Received:
    path: str  # raw: percent-escapes kept
    headers: dict[str, str]
    body: Any


class Peers(LoopbackServer):
    """Answers 202 to a POST on any path and records it."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._receive)

    async def _receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.received.append(Received(request.raw_path, dict(request.headers), orjson.loads(raw)))
        return web.json_response({"status": "success"}, status=202)

    def bodies(self, prefix: str) -> list[Any]:
        return [r.body for r in self.received if r.path.startswith(prefix)]


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    server = Peers()
    await server.start()
    yield server
    await server.stop()


def receivers(base: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "pd-vision",
            "format": "pagerduty",
            "url": f"{base}/pd-vision",
            "routing_key": VISION_KEY,
            "match": {"label": "team:vision"},
        },
        {
            "name": "pd-speech",
            "format": "pagerduty",
            "url": f"{base}/pd-speech",
            "routing_key": SPEECH_KEY,
            "match": {"label": "team:speech", "kind": "deployment"},
        },
        {
            "name": "og-vision",
            "format": "opsgenie",
            "url": f"{base}/og/v2/alerts",
            "routing_key": "genie-key",
            "match": {"id": "vis-1"},
        },
        {"name": "teams", "format": "msteams", "url": f"{base}/teams"},
        {"name": "everything", "format": "generic", "url": f"{base}/generic"},
        {"name": "custom", "format": "template", "url": f"{base}/custom", "template": "good.j2"},
        {"name": "broken", "format": "template", "url": f"{base}/broken", "template": "bad.j2"},
        {"name": "escape", "format": "template", "url": f"{base}/escape", "template": "esc.j2"},
    ]


@pytest.fixture
async def stack(
    peers: Peers, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[tuple[Settings, Ledger]]:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "good.j2").write_text(GOOD_TEMPLATE)
    (templates / "bad.j2").write_text(BROKEN_TEMPLATE)
    (templates / "esc.j2").write_text(ESCAPE_TEMPLATE)
    settings = make_settings(
        alert_receivers=orjson.dumps(receivers(peers.base_url)).decode(),
        alert_templates_dir=templates,
        public_url="https://statusd.example/",
        sync_timeout=1.0,
        sync_budget=2.0,
        sync_attempts=2,
    )
    engine = create_engine(settings.database_url, pool_size=5)
    yield settings, Ledger(engine=engine, alert_webhooks=AlertRoutes.from_settings(settings))
    await engine.dispose()


async def observe(ledger: Ledger, wid: str, state: State, seq: int | None = None) -> None:
    source = Source.SWEEPER if state in (State.UNREACHABLE, State.LOST) else Source.PUSH
    result = await apply_observation(
        ledger, Observation(wid, state, source, seq=seq, reason="no heartbeat")
    )
    assert result.outcome is Outcome.APPLIED, result


def check_trigger(body: dict[str, Any], routing_key: str, source: str, severity: str) -> None:
    """One trigger event, field by field against the Events API v2 contract."""
    assert set(body) == PD_TOP
    assert body["routing_key"] == routing_key and body["event_action"] == "trigger"
    assert isinstance(body["dedup_key"], str) and 0 < len(body["dedup_key"]) <= 255
    payload = body["payload"]
    assert set(payload) <= PD_PAYLOAD and {"summary", "source", "severity"} <= set(payload)
    assert isinstance(payload["summary"], str) and 0 < len(payload["summary"]) <= 1024
    assert payload["source"] == source
    assert payload["severity"] in PD_SEVERITIES and payload["severity"] == severity
    assert datetime.fromisoformat(payload["timestamp"]).tzinfo is not None
    assert isinstance(payload["custom_details"], dict)
    assert body["client"] == "statusd"
    assert body["client_url"] == f"https://statusd.example/workloads/{source}"
    assert body["links"] == [{"href": body["client_url"], "text": "statusd status page"}]


def sent(receiver: str, fmt: str, outcome: str, event: str = "unreachable") -> float:
    labels = {"event": event, "outcome": outcome, "receiver": receiver, "format": fmt}
    return float(ALERTS_SENT.labels(**labels)._value.get())


async def test_receivers_get_their_formats_routed_by_match(
    stack: tuple[Settings, Ledger], peers: Peers
) -> None:
    settings, ledger = stack
    await register(ledger.engine, "vis-1", Kind.TRAINING, labels={"team": "vision"})
    await register(ledger.engine, "sp-1", Kind.DEPLOYMENT, labels={"team": "speech"})
    await observe(ledger, "vis-1", State.RUNNING, seq=1)
    await observe(ledger, "sp-1", State.READY, seq=1)
    dead_before = sent("broken", "template", "dead")

    await observe(ledger, "vis-1", State.UNREACHABLE)
    await observe(ledger, "vis-1", State.LOST)
    await observe(ledger, "vis-1", State.RUNNING, seq=2)
    await observe(ledger, "sp-1", State.UNREACHABLE)
    report = await drain(ledger.engine, settings)
    # vis-1: 3 events x (pd-vision, og-vision, teams, everything, custom, broken, escape);
    # sp-1: 1 event x (pd-speech, teams, everything, custom, broken, escape).
    assert report.delivered == 3 * 5 + 4 and report.dead == 3 * 2 + 2

    # PagerDuty: team vision's incident only at vision's routing key, trigger x2 then resolve.
    vision = peers.bodies("/pd-vision")
    assert [b["event_action"] for b in vision] == ["trigger", "trigger", "resolve"]
    assert {b["dedup_key"] for b in vision} == {"statusd/vis-1"}
    check_trigger(vision[0], VISION_KEY, "vis-1", "warning")
    check_trigger(vision[1], VISION_KEY, "vis-1", "critical")
    assert vision[0]["payload"]["class"] == "StatusdWorkloadUnreachable"
    assert vision[0]["payload"]["component"] == "training"
    assert vision[0]["payload"]["custom_details"]["labels"] == {"team": "vision"}
    assert vision[2] == {
        "routing_key": VISION_KEY,
        "event_action": "resolve",
        "dedup_key": "statusd/vis-1",
    }
    speech = peers.bodies("/pd-speech")
    assert len(speech) == 1
    check_trigger(speech[0], SPEECH_KEY, "sp-1", "warning")
    assert speech[0]["dedup_key"] == "statusd/sp-1"

    # Opsgenie: create with alias = the incident, then close by that alias.
    opsgenie = [r for r in peers.received if r.path.startswith("/og/")]
    assert [r.path for r in opsgenie] == [
        "/og/v2/alerts",
        "/og/v2/alerts",
        "/og/v2/alerts/statusd%2Fvis-1/close?identifierType=alias",
    ]
    assert all(r.headers["Authorization"] == "GenieKey genie-key" for r in opsgenie)
    created = opsgenie[1].body
    assert created["alias"] == "statusd/vis-1" and created["priority"] == "P1"
    assert len(created["message"]) <= 130 and created["entity"] == "vis-1"
    assert opsgenie[2].body["source"] == "statusd"

    # Rows of one workload go out in order; different workloads' rows in parallel.
    teams = [c for c in peers.bodies("/teams") if c["title"].endswith(": vis-1")]
    assert [c["title"].split("]")[0] for c in teams] == ["[FIRING", "[FIRING", "[RESOLVED"]
    assert teams[0]["@type"] == "MessageCard" and len(peers.bodies("/teams")) == 4
    uri = teams[0]["potentialAction"][0]["targets"][0]["uri"]
    assert uri == "https://statusd.example/workloads/vis-1"

    everything = sorted(peers.bodies("/generic"), key=lambda b: b["workload"]["id"] == "sp-1")
    assert [(b["workload"]["id"], b["event"], b["status"]) for b in everything] == [
        ("vis-1", "unreachable", "firing"),
        ("vis-1", "lost", "firing"),
        ("vis-1", "recovered", "resolved"),
        ("sp-1", "unreachable", "firing"),
    ]
    assert everything[2]["alertname"] == "StatusdWorkloadLost"
    assert everything[2]["incident"] == everything[0]["incident"] == "statusd/vis-1"

    custom = sorted(peers.bodies("/custom"), key=lambda b: b["team"] == "speech")
    assert custom[0] == {
        "title": "FIRING vis-1",
        "severity": "warning",
        "page": "https://statusd.example/workloads/vis-1",
        "team": "vision",
        "to": "custom",
    }
    assert [c["team"] for c in custom] == ["vision"] * 3 + ["speech"]

    # Broken templates: dead letters with their error; nothing reached their URLs.
    assert peers.bodies("/broken") == [] and peers.bodies("/escape") == []
    rows = await outbox_rows(ledger, target=OutboxTarget.ALERT, status=OutboxStatus.DEAD)
    by_dest: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_dest.setdefault(row["destination"], []).append(row)
    assert sorted(by_dest) == ["receiver:broken", "receiver:escape"]
    for row in by_dest["receiver:broken"]:
        assert row["attempts"] == 1 and row["response_status"] is None
        assert row["last_error"].startswith("permanent: template 'bad.j2' line 1: ")
        assert "TemplateSyntaxError" in row["last_error"]
    for row in by_dest["receiver:escape"]:
        assert "template 'esc.j2'" in row["last_error"] and "__class__" in row["last_error"]
    assert sent("broken", "template", "dead") == dead_before + 2  # vis-1's and sp-1's


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (
            '[{"name": "pd", "format": "pagerduty", "url": "https://events.pagerduty.com/v2/enqueue"}]',
            "receiver 0 ('pd'): format pagerduty needs routing_key",
        ),
        (
            '[{"name": "ok", "format": "generic", "url": "https://a.example/x"},'
            ' {"name": "t", "format": "fax", "url": "https://b.example"}]',
            "receiver 1 ('t'): format: Input should be",
        ),
        (
            '[{"name": "m", "format": "generic", "url": "https://a.example", "match": {"kind": "vm"}}]',
            "receiver 0 ('m'): match.kind: Input should be",
        ),
        (
            '[{"name": "m", "format": "generic", "url": "https://a.example", "match": {}}]',
            "receiver 0 ('m'): match: match is empty",
        ),
        (
            '[{"name": "a", "format": "generic", "url": "https://a.example"},'
            ' {"name": "a", "format": "slack", "url": "https://b.example"}]',
            "receiver 1 ('a'): name is used twice",
        ),
        (
            '[{"name": "u", "format": "slack", "url": "hooks.example/x"}]',
            "receiver 0 ('u'): url 'hooks.example/x' is not an http(s) URL with a host",
        ),
        (
            '[{"name": "t", "format": "template", "url": "https://a.example", "template": "../x"}]',
            "receiver 0 ('t'): template '../x' must be a file name in the directory",
        ),
        (
            '[{"name": "t", "format": "template", "url": "https://a.example", "template": "x.j2"}]',
            "receiver 't' has format template: set STATUSD_ALERT_TEMPLATES_DIR",
        ),
        ('{"name": "x"}', "must be a JSON array of receivers"),
        ("[{", "not JSON"),
    ],
)
def test_a_bad_receiver_list_stops_startup_naming_the_entry(
    raw: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATUSD_ALERT_RECEIVERS", raw)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message and "STATUSD_ALERT_RECEIVERS" in message, message
    assert named in message, message
