"""One alert row's facts, read from its stored payload when the row is sent: what every format
renders (statusd.sync.alert_formats).

The outbox keeps one format-free payload per alert (statusd.transition_outbox.alert_payload,
statusd.sweeper.disruption.alert_payload); each destination's shape is made at send time, so a
receiver's format or template can change without rewriting queued rows, and a template that fails
fails on its own row (a dead letter with the reason).

The incident: a workload has at most one open incident, from entering UNREACHABLE (or LOST) to
its recovery, so the incident's key is the workload's: `statusd/<workload id>` (statusd's own
disruption: `statusd/disruption`). PagerDuty's dedup_key and Opsgenie's alias are that key: both
keep one open alert per key, and a trigger after the resolve opens a new one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from statusd.alerting import AlertEvent
from statusd.errors import StatusdError


class AlertName(StrEnum):
    UNREACHABLE = "StatusdWorkloadUnreachable"
    LOST = "StatusdWorkloadLost"
    FLAPPING = "StatusdWorkloadFlapping"
    DISRUPTION = "StatusdDisruption"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"


# The alert each firing event raises, and how bad it is.
FIRES: dict[AlertEvent, tuple[AlertName, Severity]] = {
    AlertEvent.UNREACHABLE: (AlertName.UNREACHABLE, Severity.WARNING),
    AlertEvent.LOST: (AlertName.LOST, Severity.CRITICAL),
    AlertEvent.FLAPPING: (AlertName.FLAPPING, Severity.WARNING),
    AlertEvent.DISRUPTION: (AlertName.DISRUPTION, Severity.CRITICAL),
}
# The alerts each event ends (entering LOST ends UNREACHABLE: one open alert per workload).
ENDS: dict[AlertEvent, tuple[AlertName, ...]] = {
    AlertEvent.LOST: (AlertName.UNREACHABLE,),
    AlertEvent.RECOVERED: (AlertName.UNREACHABLE, AlertName.LOST),
    AlertEvent.FLAPPING: (AlertName.UNREACHABLE,),
    AlertEvent.DISRUPTION_OVER: (AlertName.DISRUPTION,),
}
SEVERITY: dict[AlertName, Severity] = {name: sev for name, sev in FIRES.values()}
# A firing event is an open incident; FLAPPING fires, yet its recovery closes the incident.
OPENS_INCIDENT = frozenset({AlertEvent.UNREACHABLE, AlertEvent.LOST, AlertEvent.DISRUPTION})

_EMOJI = re.compile(r"^:[a-z0-9_+-]+:\s*")


class BadAlertRow(StatusdError, ValueError):
    """A stored payload that no format can render (a hand-edited or foreign row)."""


@dataclass(frozen=True, slots=True)
class AlertFacts:
    event: AlertEvent
    workload_id: str | None  # None: statusd's own alert (disruption)
    kind: str | None
    state: str | None
    previous: str | None
    labels: dict[str, str]
    reason: str | None
    summary: str
    at: datetime  # when the transition (or the disruption flip) happened
    started_at: datetime  # when the alert began: `at`, or a disruption's `since`
    page_url: str
    payload: dict[str, Any] = field(repr=False)

    @property
    def firing(self) -> bool:
        return self.event in FIRES

    @property
    def opens_incident(self) -> bool:
        return self.event in OPENS_INCIDENT

    @property
    def fires(self) -> tuple[AlertName, Severity] | None:
        return FIRES.get(self.event)

    @property
    def ends(self) -> tuple[AlertName, ...]:
        return ENDS.get(self.event, ())

    @property
    def alertname(self) -> AlertName:
        """The alert this event is about: the one it fires, else the first it ends."""
        fires = self.fires
        if fires is not None:
            return fires[0]
        if self.event is AlertEvent.RECOVERED and self.previous == "LOST":
            return AlertName.LOST
        return self.ends[0]

    @property
    def severity(self) -> Severity:
        return SEVERITY[self.alertname]

    @property
    def incident(self) -> str:
        return f"statusd/{self.workload_id}" if self.workload_id else "statusd/disruption"

    @property
    def description(self) -> str:
        if self.workload_id is None:
            return self.summary
        owner = self.labels.get("owner")
        parts = [
            f"{self.kind} {self.workload_id} is {self.state} (was {self.previous}) "
            f"since {self.at.isoformat()}."
        ]
        if self.reason:
            parts.append(f"Reason: {self.reason}.")
        if owner:
            parts.append(f"Owner: {owner}.")
        if self.event is AlertEvent.FLAPPING:
            parts.append("It keeps flapping: further flaps are not alerted until it is quiet.")
        return " ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """The `generic` format, and the `alert` a template sees."""
        return {
            "version": "1",
            "status": "firing" if self.firing else "resolved",
            "event": self.event.value,
            "alertname": self.alertname.value,
            "severity": self.severity.value,
            "incident": self.incident,
            "summary": self.summary,
            "description": self.description,
            "url": self.page_url,
            "at": self.at.isoformat(),
            "started_at": self.started_at.isoformat(),
            "workload": None
            if self.workload_id is None
            else {
                "id": self.workload_id,
                "kind": self.kind,
                "labels": self.labels,
                "state": self.state,
                "previous": self.previous,
            },
            "reason": self.reason,
        }


def _time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise BadAlertRow(f"alert payload has no {what}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadAlertRow(f"alert payload {what}: {exc}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_facts(payload: dict[str, Any], public_url: str) -> AlertFacts:
    """The facts of a stored alert payload; BadAlertRow when it is not one."""
    try:
        event = AlertEvent(str(payload.get("event")))
    except ValueError:
        raise BadAlertRow(f"alert payload has no known event: {payload.get('event')!r}") from None
    at = _time(payload.get("changed_at"), "changed_at")
    workload_id = payload.get("workload_id")
    if workload_id is not None and not isinstance(workload_id, str):
        raise BadAlertRow("alert payload workload_id is not a string")
    since = payload.get("since")
    started = _time(since, "since") if isinstance(since, str) else at
    labels = payload.get("labels") or {}
    page = (
        f"{public_url}/workloads/{quote(workload_id, safe='')}" if workload_id else f"{public_url}/"
    )
    return AlertFacts(
        event=event,
        workload_id=workload_id,
        kind=_str(payload.get("kind")),
        state=_str(payload.get("state")),
        previous=_str(payload.get("previous")),
        labels={str(k): str(v) for k, v in dict(labels).items()},
        reason=_str(payload.get("reason")),
        summary=_EMOJI.sub("", str(payload.get("text") or event.value)).strip(),
        at=at,
        started_at=started,
        page_url=page,
        payload=payload,
    )


def _str(value: object) -> str | None:
    return None if value is None else str(value)
