"""The shapes no end-to-end alert test reaches cheaply: statusd's own disruption alerts and the
flapping alert as Alertmanager and PagerDuty get them, label names made valid for Alertmanager,
and which receivers statusd's own alerts are routed to. Pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from statusd.alert_routes import AlertRoutes, receiver_destination
from statusd.receiver_config import parse_receivers
from statusd.silences import Matcher
from statusd.sync.alert_facts import read_facts
from statusd.sync.alert_formats import Timing, alertmanager_alerts, label_name, pagerduty_event

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
TIMING = Timing(resend_s=60.0, flap_window_s=600.0)
PUBLIC = "https://statusd.example"


def disruption(event: str, since: str | None) -> dict[str, object]:
    return {
        "text": ":satellite_antenna: statusd: 30 of 40 workloads (75%) went silent at once.",
        "event": event,
        "workload_id": None,
        "stale": 30,
        "tracked": 40,
        "fraction": 0.75,
        "since": since,
        "changed_at": NOW.isoformat(),
    }


def test_disruption_fires_and_ends_one_statusd_alert() -> None:
    since = (NOW - timedelta(seconds=5)).isoformat()
    (firing,) = alertmanager_alerts(
        read_facts(disruption("disruption", since), PUBLIC), TIMING, NOW
    )
    assert firing["labels"] == {"alertname": "StatusdDisruption", "severity": "critical"}
    assert firing["startsAt"] == "2026-12-06T11:59:55Z"
    assert firing["endsAt"] == "2026-12-06T12:04:00Z"  # four re-send intervals ahead
    assert firing["generatorURL"] == "https://statusd.example/"
    assert firing["annotations"]["summary"].startswith("statusd: 30 of 40")
    (ended,) = alertmanager_alerts(
        read_facts(disruption("disruption_over", None), PUBLIC), TIMING, NOW
    )
    assert ended["labels"] == firing["labels"] and ended["endsAt"] == "2026-12-06T12:00:00Z"
    trigger = pagerduty_event(read_facts(disruption("disruption", since), PUBLIC), "k" * 32)
    assert trigger["dedup_key"] == "statusd/disruption"
    assert trigger["payload"]["source"] == "statusd"
    assert trigger["payload"]["severity"] == "critical"
    resolve = pagerduty_event(read_facts(disruption("disruption_over", None), PUBLIC), "k" * 32)
    assert resolve == {
        "routing_key": "k" * 32,
        "event_action": "resolve",
        "dedup_key": "statusd/disruption",
    }


def test_flapping_ends_the_unreachable_alert_and_fires_one_for_the_flap_window() -> None:
    payload = {
        "text": ":repeat: statusd: training `t-1` is RUNNING (was UNREACHABLE) and flapping",
        "event": "flapping",
        "workload_id": "t-1",
        "kind": "training",
        "state": "RUNNING",
        "previous": "UNREACHABLE",
        "changed_at": NOW.isoformat(),
        "labels": {"team": "vision"},
        "reason": None,
    }
    facts = read_facts(payload, PUBLIC)
    ended, flapping = alertmanager_alerts(facts, TIMING, NOW)
    assert ended["labels"]["alertname"] == "StatusdWorkloadUnreachable"
    assert ended["endsAt"] == "2026-12-06T12:00:00Z"
    assert flapping["labels"] == {
        "alertname": "StatusdWorkloadFlapping",
        "severity": "warning",
        "workload": "t-1",
        "kind": "training",
        "team": "vision",
    }
    assert flapping["endsAt"] == "2026-12-06T12:10:00Z"  # the flap window, then it resolves
    # For PagerDuty the workload is back: the incident is resolved.
    assert pagerduty_event(facts, "k" * 32)["event_action"] == "resolve"


def test_label_names_are_made_valid_for_alertmanager() -> None:
    assert label_name("app.kubernetes.io/name") == "app_kubernetes_io_name"
    assert label_name("9lives") == "_9lives"
    assert label_name("team-name") == "team_name"
    assert label_name("ok_Name1") == "ok_Name1"


def test_statusd_alerts_go_to_receivers_without_match_only() -> None:
    receivers = parse_receivers(
        '[{"name": "all", "format": "generic", "url": "https://a.example"},'
        ' {"name": "vision", "format": "generic", "url": "https://b.example",'
        '  "match": {"label": "team:vision"}}]'
    )
    routes = AlertRoutes(
        webhooks=("https://hooks.example/x",),
        alertmanagers=("http://am:9093/",),
        receivers=tuple(
            (r.name, Matcher(label=r.match.label_pair) if r.match else None) for r in receivers
        ),
    )
    everyone = ("https://hooks.example/x", "alertmanager:http://am:9093")
    assert routes.for_statusd() == (*everyone, receiver_destination("all"))
    assert routes.for_workload("t-1", "training", {"team": "vision"}) == (
        *everyone,
        receiver_destination("all"),
        receiver_destination("vision"),
    )
    assert routes.for_workload("t-2", "training", {"team": "speech"}) == (
        *everyone,
        receiver_destination("all"),
    )
    assert not AlertRoutes()
