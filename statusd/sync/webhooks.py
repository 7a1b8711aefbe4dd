"""Alert delivery: one alert outbox row to its destination (statusd.alert_routes), in the shape
that destination wants (statusd.sync.alert_formats), rendered when the row is sent.

statusd.sync.delivery.verdict_for decides: 2xx delivered; 408, 429, 5xx and network failures
transient (retried by the drain); any other 4xx, and a URL that can never work, permanent (dead
letter: a wrong URL or a revoked hook will not heal by itself). A row that cannot be rendered
(a broken template, a receiver no longer configured, a payload that is not an alert) is a dead
letter at once, with the reason as its error: retrying would fail the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from statusd.alert_routes import DestinationKind, parse_destination
from statusd.models import utcnow
from statusd.receiver_config import Receiver, ReceiverFormat
from statusd.settings import Settings
from statusd.sync.alert_facts import BadAlertRow, read_facts
from statusd.sync.alert_formats import Outgoing, Timing, alertmanager_request, receiver_request
from statusd.sync.alert_templates import TemplateFailed
from statusd.sync.delivery import Delivery, DeliveryVerdict, clip, send, verdict_for

ALERTMANAGER_FORMAT = "alertmanager"


@dataclass(frozen=True, slots=True)
class Peer:
    """Who a row goes to, as statusd_alerts_sent_total names it (never a URL: hooks are secrets)."""

    receiver: str  # a receiver's name; `webhook` / `alertmanager` for the URL lists
    format: str


def peer_of(destination: str) -> Peer:
    kind, name = parse_destination(destination)
    if kind is DestinationKind.WEBHOOK:
        return Peer("webhook", ReceiverFormat.SLACK.value)
    if kind is DestinationKind.ALERTMANAGER:
        return Peer("alertmanager", ALERTMANAGER_FORMAT)
    return Peer(name, "receiver")


class WebhookClient:
    """Delivers alert rows over a session the caller owns."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=settings.sync_timeout)
        self.public_url = settings.effective_public_url
        self.timing = Timing(settings.alertmanager_resend_s, settings.flap_window)
        self.receivers: dict[str, Receiver] = {r.name: r for r in settings.alert_receivers}
        self.templates_dir = (
            str(settings.alert_templates_dir) if settings.alert_templates_dir else None
        )

    def peer(self, destination: str) -> Peer:
        peer = peer_of(destination)
        receiver = self.receivers.get(peer.receiver) if peer.format == "receiver" else None
        return Peer(peer.receiver, receiver.format.value) if receiver else peer

    def outgoing(self, destination: str, payload: dict[str, Any]) -> Outgoing:
        """The request for this row; raises BadAlertRow / TemplateFailed when there is none."""
        kind, target = parse_destination(destination)
        if kind is DestinationKind.WEBHOOK:
            return Outgoing(target, orjson.dumps(payload), {"Content-Type": "application/json"})
        facts = read_facts(payload, self.public_url)
        if kind is DestinationKind.ALERTMANAGER:
            return alertmanager_request(target, facts, self.timing, utcnow())
        receiver = self.receivers.get(target)
        if receiver is None:
            raise BadAlertRow(f"receiver {target!r} is not in STATUSD_ALERT_RECEIVERS")
        return receiver_request(receiver, facts, self.templates_dir)

    async def post_alert(self, destination: str, payload: dict[str, Any]) -> Delivery:
        """POST one alert row. Returns DELIVERED/DEAD; raises TransientDeliveryError to retry."""
        try:
            request = self.outgoing(destination, payload)
        except (BadAlertRow, TemplateFailed) as exc:
            reason = clip(f"permanent: {exc}")
            return Delivery(DeliveryVerdict.DEAD, None, reason, error=reason)
        answer = await send(
            self.session, "POST", request.url, request.body, request.headers, self.timeout
        )
        if isinstance(answer, Delivery):
            return answer
        return verdict_for("webhook", *answer)
