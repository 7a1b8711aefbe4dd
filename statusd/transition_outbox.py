"""What a transition leaves in the outbox: the main-DB sync event and any alert event.

Written (statusd.outbox_writer) by statusd.transitions in the transition's own DB transaction; the alert decision
(statusd.alerting) reads silences and recent flaps in that same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from statusd import maintenance, silences
from statusd.alert_routes import AlertRoutes
from statusd.alerting import AlertEvent, FlapPolicy, alert_event
from statusd.flaps import flap_times
from statusd.models import OutboxTarget
from statusd.outbox_writer import OutboxEvent, transition_key
from statusd.transition_types import AppliedTransition


async def read_alert_event(
    conn: AsyncConnection,
    policy: FlapPolicy,
    t: AppliedTransition,
    *,
    suppressed_by: str | None = None,
) -> AlertEvent | None:
    """Read what the alert decision needs (silences in force, maintenance windows, recent flaps)
    in this transaction. `suppressed_by`: the parent holding this alert (statusd.dependencies
    decided it)."""
    in_force = await silences.active_in(conn, t.recorded_at)
    windows = maintenance.Excuses.of(await maintenance.all_in(conn), t.recorded_at)
    earlier = await flap_times(
        conn,
        {t.workload_id: t.generation},
        t.recorded_at - timedelta(seconds=policy.lookback_s),
        before_transition=t.id,
    )
    return alert_event(
        t.from_state,
        t.to_state,
        at=t.recorded_at.timestamp(),
        silenced=silences.silenced(in_force, t.workload_id, t.kind, t.labels),
        earlier_flaps=earlier.get(t.workload_id, []),
        policy=policy,
        suppressed_by=suppressed_by,
        in_maintenance=windows.covers(t.workload_id, t.kind, t.labels),
    )


def outbox_events(
    t: AppliedTransition, routes: AlertRoutes | Sequence[str], event: AlertEvent | None
) -> list[OutboxEvent]:
    """What one transition leaves in the outbox (statusd.outbox_writer): always the main-DB sync;
    an alert to every destination routed to this workload (statusd.alert_routes) when the alert
    decision (statusd.alerting.alert_event) names an event. A plain sequence is webhook URLs."""
    if not isinstance(routes, AlertRoutes):
        routes = AlertRoutes(webhooks=tuple(routes))
    key = transition_key(t.id)
    events = [
        OutboxEvent(
            key=key,
            target=OutboxTarget.MAIN,
            workload_id=t.workload_id,
            transition_id=t.id,
            payload={
                "state": t.to_state.value,
                "previous": t.from_state.value,
                "changed_at": t.recorded_at.isoformat(),
                "transition_id": t.id,
                "source": t.source.value,
                "reason": t.reason,
            },
        )
    ]
    destinations = routes.for_workload(t.workload_id, t.kind, t.labels) if event else ()
    if event is not None and destinations:
        events.append(
            OutboxEvent(
                key=key,
                target=OutboxTarget.ALERT,
                workload_id=t.workload_id,
                transition_id=t.id,
                payload=alert_payload(t, event),
                destinations=destinations,
            )
        )
    return events


def alert_payload(t: AppliedTransition, event: AlertEvent) -> dict[str, object]:
    """A JSON alert that Slack-compatible webhooks render (`text`) and machines parse (the rest)."""
    icon = {
        "unreachable": ":warning:",
        "lost": ":rotating_light:",
        "recovered": ":white_check_mark:",
        "flapping": ":repeat:",
    }.get(event, "")
    owner = t.labels.get("owner")
    flapping = (
        " and flapping (further flaps are not alerted)" if event is AlertEvent.FLAPPING else ""
    )
    text = (
        f"{icon} statusd: {t.kind.value} `{t.workload_id}` is {t.to_state.value} "
        f"(was {t.from_state.value}){flapping}"
        + (f", owner {owner}" if owner else "")
        + (f": {t.reason}" if t.reason else "")
    )
    return {
        "text": text.strip(),
        "event": event.value,
        "workload_id": t.workload_id,
        "kind": t.kind.value,
        "state": t.to_state.value,
        "previous": t.from_state.value,
        "transition_id": t.id,
        "changed_at": t.recorded_at.isoformat(),
        "labels": t.labels,
        "reason": t.reason,
    }
