"""Dependencies: a workload may name a parent at registration (a node agent and the containers
on its node). While the parent is down, its children's unreachable/lost alerts are held: one page
for the node, not one per container. Their states still move; only the alert waits.

- Held: a child's transition into UNREACHABLE or LOST while its parent is down by
  `Judge.silent_with` (statusd.staleness: UNREACHABLE, LOST, stale, or gone silent together with
  the child). The hold is a row in `held_alerts` (the child's newest held transition), written in
  the transition's own database transaction.
- Raised after all: when the parent recovers, in the parent's recovery transaction, every child
  still UNREACHABLE/LOST with a hold raises the alert of its current state, under its own event
  key (`released:<held transition id>`), unless a silence covers it now. When the parent proves
  alive without a recovery (heard again while never UNREACHABLE), finishes or is deregistered,
  the sweeper raises them at its next sweep (`release_idle`).
- Dropped: a child that recovers while its alert is still held raises nothing (its outage was
  never announced, so there is nothing to resolve); a child whose alert went out raises its
  recovery whatever its parent's state: resolutions always flow.

A cycle is impossible: the parent is fixed at registration and must already be registered then.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import RowMapping, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from statusd import liveness, silences
from statusd.alert_routes import AlertRoutes
from statusd.alerting import AlertEvent, contact_event
from statusd.db import reading, transaction
from statusd.hearing import read_hearing
from statusd.keys import Keys
from statusd.lifecycle import CONTACT_STATES, FINAL_STATES, Kind, Source, State
from statusd.models import OutboxTarget, utcnow
from statusd.outbox_writer import OutboxEvent, released_key, write_outbox
from statusd.settings import Settings
from statusd.staleness import Facts, Judge
from statusd.tables import HELD_ALERTS, TRANSITIONS, WORKLOADS
from statusd.transition_outbox import outbox_events
from statusd.transition_types import AppliedTransition


@dataclass(frozen=True, slots=True)
class ParentWatch:
    """Liveness as the hold decision reads it: Redis (live last-seen, what ingest could hear)
    and the settings of the rule. Without one, only a parent's UNREACHABLE/LOST state counts."""

    redis: Redis
    keys: Keys
    settings: Settings

    async def judge(self, now: float) -> Judge:
        """The rule at `now` (what ingest could hear, the paced interval)."""
        return Judge.of(self.settings, await read_hearing(self.redis, self.keys), now)

    async def last_seen(self, ids: Sequence[str]) -> dict[str, float | None]:
        """Each id's live last-seen (unix seconds), one round trip."""
        seen = await liveness.scores(self.redis, self.keys, self.keys.last_seen, list(ids))
        return dict(zip(ids, seen, strict=True))


@dataclass(slots=True)
class Holds:
    """The hold decisions of one batch of transitions: the rule is read once for the batch (a
    dead node convicts its containers in batches, each asking about the same parent)."""

    watch: ParentWatch | None
    _judge: Judge | None = None

    async def judge(self) -> Judge | None:
        if self.watch is not None and self._judge is None:
            self._judge = await self.watch.judge(time.time())
        return self._judge


def _facts(row: RowMapping, live_seen: float | None) -> Facts:
    db_seen: datetime | None = row["last_seen_at"]
    seen = [s for s in (db_seen.timestamp() if db_seen else None, live_seen) if s is not None]
    return Facts(State(row["state"]), max(seen) if seen else None, row["created_at"].timestamp())


_LIVENESS_COLUMNS = (
    WORKLOADS.c.id,
    WORKLOADS.c.state,
    WORKLOADS.c.last_seen_at,
    WORKLOADS.c.created_at,
)


async def _rows(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, RowMapping]:
    query = select(*_LIVENESS_COLUMNS).where(
        WORKLOADS.c.id.in_(list(ids)), WORKLOADS.c.deleted_at.is_(None)
    )
    return {row["id"]: row for row in (await conn.execute(query)).mappings()}


async def parent_down(conn: AsyncConnection, holds: Holds, child: str, parent: str) -> bool:
    """Whether `parent` holds `child`'s alert now (read in the caller's transaction, so a parent
    that went UNREACHABLE earlier in the same batch counts)."""
    rows = await _rows(conn, [child, parent])
    if parent not in rows:
        return False  # deregistered: nothing to hold for
    judge = await holds.judge()
    if holds.watch is None or judge is None:
        return State(rows[parent]["state"]) in CONTACT_STATES
    seen = await holds.watch.last_seen([child, parent])
    parent_facts = _facts(rows[parent], seen[parent])
    if child not in rows:
        return judge.staleness(parent_facts) is not None
    return judge.silent_with(parent_facts, _facts(rows[child], seen[child]))


async def _take_hold(conn: AsyncConnection, child: str) -> str | None:
    """Drop the child's hold; the parent that held it, if there was one."""
    taken = await conn.execute(
        delete(HELD_ALERTS)
        .where(HELD_ALERTS.c.workload_id == child)
        .returning(HELD_ALERTS.c.parent)
    )
    return taken.scalar_one_or_none()


async def hold(
    conn: AsyncConnection, holds: Holds, t: AppliedTransition, parent: str | None
) -> str | None:
    """The parent holding this transition's alert (None: it is not held), recording or dropping
    the child's hold. Only contact transitions (entering UNREACHABLE/LOST, recovering) of a
    workload with a parent are asked."""
    event = contact_event(t.from_state, t.to_state)
    if parent is None or event is None:
        return None
    if event is AlertEvent.RECOVERED:
        # Its outage never went out: nothing to resolve. Otherwise the resolution flows.
        return await _take_hold(conn, t.workload_id)
    await _take_hold(conn, t.workload_id)  # a newer transition replaces an older hold
    if not await parent_down(conn, holds, t.workload_id, parent):
        return None
    await conn.execute(
        insert(HELD_ALERTS).values(
            workload_id=t.workload_id,
            generation=t.generation,
            parent=parent,
            transition_id=t.id,
            held_at=utcnow(),
        )
    )
    return parent


def _applied(row: RowMapping, labels: Mapping[str, str]) -> AppliedTransition:
    return AppliedTransition(
        id=int(row["id"]),
        workload_id=row["workload_id"],
        kind=Kind(row["kind"]),
        from_state=State(row["from_state"]),
        to_state=State(row["to_state"]),
        source=Source(row["source"]),
        reason=row["reason"],
        seq=row["seq"],
        observed_at=row["observed_at"],
        recorded_at=row["recorded_at"],
        generation=int(row["generation"]),
        actor=row["actor"],
        labels=dict(labels),
    )


async def release(
    conn: AsyncConnection, parents: Sequence[str], webhooks: AlertRoutes | Sequence[str]
) -> list[OutboxEvent]:
    """The held alerts of these parents' children still UNREACHABLE/LOST (the alert of each
    one's current state, under its own event key), for the caller to write in its transaction
    (statusd.outbox_writer.write_outbox); drops every hold of these parents. In child id order."""
    if not parents:
        return []
    # DELETE ... RETURNING takes the holds: a concurrent release (the sweeper's, a parent's
    # recovery) waits for the row locks and then finds them gone, so none is raised twice.
    taken = await conn.execute(
        delete(HELD_ALERTS).where(HELD_ALERTS.c.parent.in_(list(parents))).returning(*HELD_ALERTS.c)
    )
    held = sorted(taken.mappings().all(), key=lambda h: str(h["workload_id"]))
    if not held:
        return []
    children = {
        row["id"]: row
        for row in (
            await conn.execute(
                select(
                    WORKLOADS.c.id,
                    WORKLOADS.c.kind,
                    WORKLOADS.c.state,
                    WORKLOADS.c.generation,
                    WORKLOADS.c.labels,
                ).where(
                    WORKLOADS.c.id.in_([h["workload_id"] for h in held]),
                    WORKLOADS.c.deleted_at.is_(None),
                )
            )
        ).mappings()
    }
    transitions = {
        int(row["id"]): row
        for row in (
            await conn.execute(
                select(TRANSITIONS).where(TRANSITIONS.c.id.in_([h["transition_id"] for h in held]))
            )
        ).mappings()
    }
    in_force = await silences.active_in(conn, datetime.now(UTC))
    events: list[OutboxEvent] = []
    for h in held:
        child = children.get(h["workload_id"])
        row = transitions.get(int(h["transition_id"]))
        if (
            child is None
            or row is None
            or int(child["generation"]) != int(h["generation"])
            or row["to_state"] != child["state"]  # moved on since: that transition decided
            or State(child["state"]) not in CONTACT_STATES
        ):
            continue
        labels = dict(child["labels"] or {})
        if silences.silenced(in_force, child["id"], Kind(child["kind"]), labels):
            continue
        t = _applied(row, labels)
        event = AlertEvent(t.to_state.value.lower())
        events += [
            replace(e, key=released_key(t.id), payload=_late(e.payload, str(h["parent"])))
            for e in outbox_events(t, webhooks, event)
            if e.target is OutboxTarget.ALERT
        ]
    return events


def _late(payload: dict[str, Any], parent: str) -> dict[str, Any]:
    """The alert as it would have gone out, saying why it comes late (`held_by`, and the text
    that Slack-style receivers show)."""
    late = {**payload, "held_by": parent}
    if isinstance(payload.get("text"), str):
        late["text"] = f"{payload['text']} (held while its parent `{parent}` was down)"
    return late


async def release_idle(
    engine: AsyncEngine, watch: ParentWatch, webhooks: AlertRoutes | Sequence[str]
) -> int:
    """The sweeper's pass: raise the holds of parents that proved alive without a recovery
    transaction (heard after the hold while not UNREACHABLE/LOST), finished or deregistered.
    One small query when nothing is held. The number of children alerted."""
    async with reading(engine) as conn:
        held = (
            await conn.execute(
                select(HELD_ALERTS.c.parent, HELD_ALERTS.c.held_at).order_by(HELD_ALERTS.c.parent)
            )
        ).all()
        if not held:
            return 0
        newest: dict[str, datetime] = {}
        for parent, held_at in held:
            newest[parent] = max(newest.get(parent, held_at), held_at)
        rows = await _rows(conn, list(newest))
    seen = await watch.last_seen(list(newest))
    idle = []
    for parent, held_at in newest.items():
        row = rows.get(parent)
        if row is None or State(row["state"]) in FINAL_STATES:
            idle.append(parent)  # deregistered or finished: it holds nothing
            continue
        last = _facts(row, seen[parent]).last_seen
        heard = last is not None and last > held_at.timestamp()
        if heard and State(row["state"]) not in CONTACT_STATES:
            idle.append(parent)
    if not idle:
        return 0
    async with transaction(engine) as conn:
        events = await release(conn, idle, webhooks)
        await write_outbox(conn, events)
    return len({e.workload_id for e in events})


async def suppressed_by(
    conn: AsyncConnection,
    watch: ParentWatch,
    rows: Sequence[Mapping[str, Any]],
    judge: Judge,
) -> dict[str, str]:
    """What the API, the stale report and the page show: child id -> its parent's id, for the
    children among `rows` whose parent is down now (UNREACHABLE, LOST or stale by the rule)."""
    parent_of = {row["id"]: row["parent"] for row in rows if row.get("parent")}
    if not parent_of:
        return {}
    parents = sorted(set(parent_of.values()))
    found = await _rows(conn, parents)
    live = await liveness.scores(watch.redis, watch.keys, watch.keys.last_seen, parents)
    seen = dict(zip(parents, live, strict=True))
    down = {p for p, row in found.items() if judge.staleness(_facts(row, seen[p])) is not None}
    return {child: parent for child, parent in parent_of.items() if parent in down}
