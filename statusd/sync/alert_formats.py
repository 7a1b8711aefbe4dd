"""Each destination's shape of one alert (statusd.sync.alert_facts): the HTTP request to send.

- Alertmanager: `POST <base>/api/v2/alerts` with the alerts this event fires and ends, as
  Prometheus posts them: a firing alert's endsAt is four re-send intervals ahead (Alertmanager
  resolves it by itself if statusd stops re-sending), an ended one's endsAt is the transition.
  Labels: alertname, workload, kind, severity and the workload's own labels (names made valid
  for Alertmanager; statusd's four win a clash); annotations summary, description.
- PagerDuty Events API v2: `trigger` for UNREACHABLE / LOST / disruption, `resolve` for their
  end, dedup_key = the incident. FLAPPING is a recovery, so for PagerDuty it resolves.
- Opsgenie Alert API v2: create with alias = the incident; close by alias.
- Microsoft Teams: an incoming-webhook MessageCard.
- generic: AlertFacts.as_json. slack: the stored payload itself (what STATUSD_ALERT_WEBHOOKS got).
- template: statusd.sync.alert_templates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson

from statusd.receiver_config import Receiver, ReceiverFormat
from statusd.sync.alert_facts import SEVERITY, AlertFacts, AlertName, Severity
from statusd.sync.alert_templates import render_template

JSON = {"Content-Type": "application/json"}
_LABEL_FIRST = re.compile(r"^[^a-zA-Z_]")
_LABEL_REST = re.compile(r"[^a-zA-Z0-9_]")
PAGERDUTY_SUMMARY_MAX = 1024
PAGERDUTY_DEDUP_MAX = 255
OPSGENIE_MESSAGE_MAX = 130
OPSGENIE_ALIAS_MAX = 512


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One HTTP request to make for one alert row."""

    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Timing:
    """What the Alertmanager shape needs from the settings."""

    resend_s: float  # STATUSD_ALERTMANAGER_RESEND_S
    flap_window_s: float  # STATUSD_FLAP_WINDOW: how long a flapping alert stays up


def label_name(name: str) -> str:
    """A valid Alertmanager (Prometheus) label name: [a-zA-Z_][a-zA-Z0-9_]*."""
    cleaned = _LABEL_REST.sub("_", name)
    return "_" + cleaned if _LABEL_FIRST.match(cleaned) or not cleaned else cleaned


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def alertmanager_labels(facts: AlertFacts, name: AlertName) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, value in facts.labels.items():
        if value:  # an empty label value means no label to Alertmanager
            labels[label_name(key)] = value
    labels["alertname"] = name.value
    labels["severity"] = SEVERITY[name].value
    if facts.workload_id is not None:
        labels["workload"] = facts.workload_id
        if facts.kind:
            labels["kind"] = facts.kind
    return labels


def alertmanager_alerts(facts: AlertFacts, timing: Timing, now: datetime) -> list[dict[str, Any]]:
    annotations = {"summary": facts.summary, "description": facts.description}
    alerts = [
        {
            "labels": alertmanager_labels(facts, name),
            "annotations": annotations,
            "generatorURL": facts.page_url,
            "startsAt": _iso(facts.at),
            "endsAt": _iso(facts.at),
        }
        for name in facts.ends
    ]
    fires = facts.fires
    if fires is not None:
        name = fires[0]
        if name is AlertName.FLAPPING:
            ends = facts.at + timedelta(seconds=timing.flap_window_s)
        else:
            ends = now + timedelta(seconds=4 * timing.resend_s)
        alerts.append(
            {
                "labels": alertmanager_labels(facts, name),
                "annotations": annotations,
                "generatorURL": facts.page_url,
                "startsAt": _iso(facts.started_at),
                "endsAt": _iso(ends),
            }
        )
    return alerts


def alertmanager_request(
    base_url: str, facts: AlertFacts, timing: Timing, now: datetime
) -> Outgoing:
    body = orjson.dumps(alertmanager_alerts(facts, timing, now))
    return Outgoing(f"{base_url.rstrip('/')}/api/v2/alerts", body, JSON)


def pagerduty_event(facts: AlertFacts, routing_key: str) -> dict[str, Any]:
    dedup_key = facts.incident[:PAGERDUTY_DEDUP_MAX]
    if not facts.opens_incident:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    details: dict[str, Any] = {
        "event": facts.event.value,
        "description": facts.description,
    }
    if facts.workload_id is not None:
        details.update(
            workload=facts.workload_id,
            kind=facts.kind,
            state=facts.state,
            previous=facts.previous,
            reason=facts.reason,
            labels=facts.labels,
        )
    payload: dict[str, Any] = {
        "summary": facts.summary[:PAGERDUTY_SUMMARY_MAX],
        "source": facts.workload_id or "statusd",
        "severity": facts.severity.value,
        "timestamp": _iso(facts.at),
        "class": facts.alertname.value,
        "custom_details": details,
    }
    if facts.kind:
        payload["component"] = facts.kind
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": payload,
        "client": "statusd",
        "client_url": facts.page_url,
        "links": [{"href": facts.page_url, "text": "statusd status page"}],
    }


def opsgenie_request(url: str, facts: AlertFacts, api_key: str) -> Outgoing:
    headers = {**JSON, "Authorization": f"GenieKey {api_key}"}
    alias = facts.incident[:OPSGENIE_ALIAS_MAX]
    if not facts.opens_incident:
        close = f"{url.rstrip('/')}/{quote(alias, safe='')}/close?identifierType=alias"
        return Outgoing(close, orjson.dumps({"source": "statusd", "note": facts.summary}), headers)
    body = {
        "message": facts.summary[:OPSGENIE_MESSAGE_MAX],
        "alias": alias,
        "description": facts.description,
        "source": "statusd",
        "entity": facts.workload_id or "statusd",
        "priority": "P1" if facts.severity is Severity.CRITICAL else "P3",
        "tags": [t for t in (facts.alertname.value, facts.kind, facts.severity.value) if t],
        "details": {**facts.labels, "url": facts.page_url, "event": facts.event.value},
    }
    return Outgoing(url, orjson.dumps(body), headers)


def msteams_card(facts: AlertFacts) -> dict[str, Any]:
    colour = (
        ("D93F0B" if facts.severity is Severity.CRITICAL else "FBCA04")
        if facts.firing
        else "2EA44F"
    )
    status = "FIRING" if facts.firing else "RESOLVED"
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": facts.summary,
        "themeColor": colour,
        "title": f"[{status}] {facts.alertname.value}: {facts.workload_id or 'statusd'}",
        "text": facts.description,
        "potentialAction": [
            {
                "@type": "OpenUri",
                "name": "Status page",
                "targets": [{"os": "default", "uri": facts.page_url}],
            }
        ],
    }


def receiver_request(receiver: Receiver, facts: AlertFacts, templates_dir: str | None) -> Outgoing:
    """The request for a STATUSD_ALERT_RECEIVERS receiver; TemplateFailed for a bad template."""
    fmt = receiver.format
    if fmt is ReceiverFormat.SLACK:
        return Outgoing(receiver.url, orjson.dumps(facts.payload), JSON)
    if fmt is ReceiverFormat.PAGERDUTY:
        body = pagerduty_event(facts, receiver.routing_key or "")
        return Outgoing(receiver.url, orjson.dumps(body), JSON)
    if fmt is ReceiverFormat.OPSGENIE:
        return opsgenie_request(receiver.url, facts, receiver.routing_key or "")
    if fmt is ReceiverFormat.MSTEAMS:
        return Outgoing(receiver.url, orjson.dumps(msteams_card(facts)), JSON)
    if fmt is ReceiverFormat.GENERIC:
        return Outgoing(receiver.url, orjson.dumps(facts.as_json()), JSON)
    text = render_template(templates_dir, receiver.template or "", receiver.name, facts)
    try:
        orjson.loads(text)
        content_type = "application/json"
    except orjson.JSONDecodeError:
        content_type = "text/plain; charset=utf-8"
    return Outgoing(receiver.url, text.encode(), {"Content-Type": content_type})
