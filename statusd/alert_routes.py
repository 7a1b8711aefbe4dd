"""Where an alert goes: the outbox destinations of one alert event, decided when it is written.

Each destination is one outbox row (statusd.outbox_writer), so each is retried, ordered and
dead-lettered on its own. A row's `destination` names how the drain delivers it:
- a bare http(s) URL: a STATUSD_ALERT_WEBHOOKS webhook (the Slack-compatible payload, as ever);
- `alertmanager:<base URL>`: one of STATUSD_ALERTMANAGER_URLS (every one gets every alert);
- `receiver:<name>`: one of STATUSD_ALERT_RECEIVERS, looked up by name when the row is sent, so
  its format and URL are the ones configured then.
Routing uses the silences' matcher (statusd.silences.Matcher): a receiver with `match` gets only
the alerts of workloads it fits, one without takes everything, statusd's own disruption alerts
included (they concern no workload, so no matcher fits them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from statusd.lifecycle import Kind
from statusd.receiver_config import Receiver
from statusd.settings import Settings
from statusd.silences import Matcher

ALERTMANAGER_PREFIX = "alertmanager:"
RECEIVER_PREFIX = "receiver:"


class DestinationKind(StrEnum):
    WEBHOOK = "webhook"
    ALERTMANAGER = "alertmanager"
    RECEIVER = "receiver"


def alertmanager_destination(base_url: str) -> str:
    return ALERTMANAGER_PREFIX + base_url.rstrip("/")


def receiver_destination(name: str) -> str:
    return RECEIVER_PREFIX + name


def parse_destination(destination: str) -> tuple[DestinationKind, str]:
    """(kind, the URL or receiver name) of an alert row's destination."""
    if destination.startswith(ALERTMANAGER_PREFIX):
        return DestinationKind.ALERTMANAGER, destination.removeprefix(ALERTMANAGER_PREFIX)
    if destination.startswith(RECEIVER_PREFIX):
        return DestinationKind.RECEIVER, destination.removeprefix(RECEIVER_PREFIX)
    return DestinationKind.WEBHOOK, destination


def receiver_matcher(receiver: Receiver) -> Matcher | None:
    match = receiver.match
    if match is None:
        return None
    return Matcher(kind=match.kind, label=match.label_pair, workload_id=match.id)


@dataclass(frozen=True, slots=True)
class AlertRoutes:
    """The configured alert destinations; falsy when there are none (no alert rows at all)."""

    webhooks: tuple[str, ...] = ()
    alertmanagers: tuple[str, ...] = ()
    receivers: tuple[tuple[str, Matcher | None], ...] = ()  # (name, matcher)

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertRoutes:
        return cls(
            webhooks=tuple(settings.alert_webhooks),
            alertmanagers=tuple(settings.alertmanager_urls),
            receivers=tuple((r.name, receiver_matcher(r)) for r in settings.alert_receivers),
        )

    def __bool__(self) -> bool:
        return bool(self.webhooks or self.alertmanagers or self.receivers)

    def _everyone(self) -> tuple[str, ...]:
        return (*self.webhooks, *(alertmanager_destination(u) for u in self.alertmanagers))

    def for_workload(
        self, workload_id: str, kind: Kind | str, labels: Mapping[str, str]
    ) -> tuple[str, ...]:
        """The destinations of an alert about this workload."""
        routed = (
            receiver_destination(name)
            for name, matcher in self.receivers
            if matcher is None or matcher.matches(workload_id, kind, labels)
        )
        return (*self._everyone(), *routed)

    def for_statusd(self) -> tuple[str, ...]:
        """The destinations of statusd's own alerts (disruption): receivers without `match`."""
        routed = (receiver_destination(name) for name, matcher in self.receivers if matcher is None)
        return (*self._everyone(), *routed)
