"""Dependencies: a child's unreachable/lost alert is held while its parent is down, on real
SQLite and PostgreSQL with a real Redis (live last-seen), through the one transition path.

- The rule (statusd.staleness `Judge.silent_with`): a parent UNREACHABLE/LOST or stale holds;
  so does one that went silent with the child, up to one heartbeat interval later (its last
  heartbeat came later in the beat); a parent heard within the interval does not.
- Whichever the sweeper convicts first, the parent or the child, exactly one alert (the
  parent's) is written; the parent's recovery raises the alerts of the children still down, in
  its own transaction with their own event keys; a child that recovered while held raises
  nothing; one whose alert went out has its recovery flow even while the parent is down.
- A parent that proves alive without a recovery (heard again before being convicted), or
  finishes, has its holds raised by the sweeper's pass.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from statusd import dependencies, liveness
from statusd.db import create_engine, reading
from statusd.dependencies import ParentWatch
from statusd.keys import Keys
from statusd.lifecycle import Kind, Source, State
from statusd.models import OutboxTarget
from statusd.registry import register
from statusd.settings import Settings
from statusd.staleness import Facts, Judge
from statusd.tables import HELD_ALERTS, OUTBOX
from statusd.transitions import Ledger, Observation, apply_observation

TTL = 3.0  # heartbeat interval 1 s (TTL / 3), silence allowed 3 s
HOOK = "http://127.0.0.1:9/hook"  # never delivered here: the outbox rows are what is checked


def judge(now: float = 1000.0, *, deaf: bool = False) -> Judge:
    return Judge(TTL, 60.0, now, deaf_until=now + 1 if deaf else None, interval=TTL / 3)


def seen(at: float, state: State = State.READY) -> Facts:
    return Facts(state, at, registered_at=0.0)


# -- the rule -----------------------------------------------------------------------------------


def test_a_parent_unreachable_lost_or_stale_holds() -> None:
    child = seen(996.0)  # silent 4 s: past its 3 s allowance
    assert judge().silent_with(seen(999.9, State.UNREACHABLE), child)
    assert judge().silent_with(seen(999.9, State.LOST), child)
    assert judge().silent_with(seen(996.5), child)  # stale itself (3.5 s)


def test_a_parent_silent_since_the_child_went_quiet_holds_before_it_is_stale() -> None:
    # The node died at 997.0: the child last beat at 996.1, the parent at 996.9 (later in the
    # beat). At 999.2 the child is past its allowance, the parent not yet (2.3 s of 3 s).
    child, parent = seen(996.1), seen(996.9)
    assert judge(999.2).silent(child) is not None and judge(999.2).silent(parent) is None
    assert judge(999.2).silent_with(parent, child)


def test_a_parent_heard_within_the_interval_does_not_hold() -> None:
    assert not judge().silent_with(seen(999.5), seen(996.0))
    assert not judge().silent_with(seen(997.2), seen(996.0))  # heard 1.2 s after the child


def test_a_finished_or_never_heard_parent_holds_only_when_the_rule_says_it_is_stale() -> None:
    child = seen(996.0)
    assert not judge().silent_with(seen(996.0, State.STOPPED), child)
    never = Facts(State.PENDING, None, registered_at=990.0)  # within its 60 s start timeout
    assert not judge().silent_with(never, child)
    assert judge(1100.0).silent_with(never, seen(1096.0))  # past it: stale (never seen)


def test_silence_proves_nothing_while_deaf_but_a_convicted_parent_still_holds() -> None:
    assert not judge(deaf=True).silent_with(seen(990.0), seen(990.0))
    assert judge(deaf=True).silent_with(seen(990.0, State.UNREACHABLE), seen(990.0))


# -- through the transition path, both databases ------------------------------------------------


@pytest.fixture
async def ledger(
    database_url: str, redis: Redis, redis_prefix: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[Ledger]:
    settings = make_settings(heartbeat_ttl=TTL, alert_webhooks=[HOOK])
    engine = create_engine(database_url, pool_size=10)
    watch = ParentWatch(redis, Keys(redis_prefix, settings.stream_shards), settings)
    yield Ledger(engine=engine, alert_webhooks=(HOOK,), parents=watch)
    await engine.dispose()


async def family(ledger: Ledger, parent: str, children: list[str], silent_s: float) -> None:
    """A parent and its children, READY, all last heard `silent_s` ago (the node died then)."""
    await register(ledger.engine, parent, Kind.DEPLOYMENT)
    for child in children:
        await register(ledger.engine, child, Kind.TRAINING, parent=parent)
    at = time.time() - silent_s
    for seq, wid in enumerate([parent, *children], start=1):
        ready = State.READY if wid == parent else State.RUNNING
        observed = datetime.fromtimestamp(at, UTC)
        await apply_observation(
            ledger, Observation(wid, ready, Source.PUSH, seq=seq, observed_at=observed)
        )
    assert ledger.parents is not None
    await liveness.mark_seen(
        ledger.parents.redis, ledger.parents.keys, {w: (at, None) for w in [parent, *children]}
    )


async def convict(ledger: Ledger, wid: str, state: State = State.UNREACHABLE) -> None:
    await apply_observation(ledger, Observation(wid, state, Source.SWEEPER, reason="silent"))


async def alerts(ledger: Ledger) -> list[tuple[str, str, str]]:
    """(workload, event, event key) of every alert row, in the order written."""
    async with reading(ledger.engine) as conn:
        rows = await conn.execute(
            select(OUTBOX.c.workload_id, OUTBOX.c.payload, OUTBOX.c.event_key)
            .where(OUTBOX.c.target == OutboxTarget.ALERT)
            .order_by(OUTBOX.c.id)
        )
        return [(w, str(p["event"]), k) for w, p, k in rows]


async def payloads(ledger: Ledger) -> dict[str, dict[str, Any]]:
    """The newest alert payload of each workload."""
    async with reading(ledger.engine) as conn:
        rows = await conn.execute(
            select(OUTBOX.c.workload_id, OUTBOX.c.payload)
            .where(OUTBOX.c.target == OutboxTarget.ALERT)
            .order_by(OUTBOX.c.id)
        )
        return {w: dict(p) for w, p in rows}


async def held(ledger: Ledger) -> set[str]:
    async with reading(ledger.engine) as conn:
        return set((await conn.execute(select(HELD_ALERTS.c.workload_id))).scalars())


@pytest.mark.parametrize("parent_first", [False, True], ids=["children-first", "parent-first"])
async def test_one_alert_whatever_the_sweep_order_then_the_children_still_down(
    ledger: Ledger, parent_first: bool
) -> None:
    kids = ["node-a.c0", "node-a.c1", "node-a.c2"]
    await family(ledger, "node-a", kids, silent_s=TTL + 1)
    order = ["node-a", *kids] if parent_first else [*kids, "node-a"]
    for wid in order:
        await convict(ledger, wid)
    assert [(w, e) for w, e, _ in await alerts(ledger)] == [("node-a", "unreachable")]
    assert await held(ledger) == set(kids)

    # Still down while the parent is: LOST moves the state, the alert stays held.
    await convict(ledger, "node-a.c2", State.LOST)
    # c0 comes back while held: nothing to resolve, nothing sent.
    await apply_observation(ledger, Observation("node-a.c0", State.RUNNING, Source.PUSH, seq=9))
    assert [(w, e) for w, e, _ in await alerts(ledger)] == [("node-a", "unreachable")]

    await apply_observation(ledger, Observation("node-a", State.READY, Source.PUSH, seq=9))
    got = await alerts(ledger)
    assert [(w, e) for w, e, _ in got[1:]] == [
        ("node-a", "recovered"),
        ("node-a.c1", "unreachable"),
        ("node-a.c2", "lost"),
    ]
    assert [k.split(":")[0] for _, _, k in got[2:]] == ["released", "released"]
    assert await held(ledger) == set()
    late = (await payloads(ledger))["node-a.c2"]
    assert late["held_by"] == "node-a" and late["state"] == "LOST"
    assert "held while its parent `node-a` was down" in late["text"]


async def test_a_parent_heard_recently_does_not_hold_and_resolutions_always_flow(
    ledger: Ledger,
) -> None:
    await family(ledger, "node-b", ["node-b.c0"], silent_s=TTL + 1)
    assert ledger.parents is not None
    redis, keys = ledger.parents.redis, ledger.parents.keys
    await liveness.mark_seen(redis, keys, {"node-b": (time.time(), None)})  # the parent is fine
    await convict(ledger, "node-b.c0")
    assert [(w, e) for w, e, _ in await alerts(ledger)] == [("node-b.c0", "unreachable")]
    # Now the parent dies too; the child's recovery is not held: its outage went out.
    await convict(ledger, "node-b")
    await apply_observation(ledger, Observation("node-b.c0", State.RUNNING, Source.PUSH, seq=9))
    assert [(w, e) for w, e, _ in await alerts(ledger)] == [
        ("node-b.c0", "unreachable"),
        ("node-b", "unreachable"),
        ("node-b.c0", "recovered"),
    ]


async def test_a_parent_that_proves_alive_without_a_recovery_releases_at_the_sweep(
    ledger: Ledger,
) -> None:
    await family(ledger, "node-c", ["node-c.c0", "node-c.c1"], silent_s=TTL + 1)
    await convict(ledger, "node-c.c0")  # the parent is silent too: held
    assert await held(ledger) == {"node-c.c0"}
    assert ledger.parents is not None
    assert await dependencies.release_idle(ledger.engine, ledger.parents, (HOOK,)) == 0
    # The parent was only quiet: heard again, never UNREACHABLE, so no recovery transaction.
    await liveness.mark_seen(
        ledger.parents.redis, ledger.parents.keys, {"node-c": (time.time(), None)}
    )
    assert await dependencies.release_idle(ledger.engine, ledger.parents, (HOOK,)) == 1
    assert [(w, e) for w, e, _ in await alerts(ledger)] == [("node-c.c0", "unreachable")]
    assert await held(ledger) == set()


async def test_a_child_convicted_before_its_parent_is_stale_is_held(ledger: Ledger) -> None:
    # The node died 3.2 s ago: the child beat last then, the agent 0.7 s later in the beat. The
    # child is past its 3 s allowance, the agent not yet (2.5 s): the child's alert is held.
    await family(ledger, "node-d", ["node-d.c0"], silent_s=3.2)
    assert ledger.parents is not None
    at = time.time() - 2.5
    await liveness.mark_seen(ledger.parents.redis, ledger.parents.keys, {"node-d": (at, None)})
    await convict(ledger, "node-d.c0")
    assert await alerts(ledger) == [] and await held(ledger) == {"node-d.c0"}
    await convict(ledger, "node-d")  # a sweep later: the agent's alert, the only one
    assert [(w, e) for w, e, _ in await alerts(ledger)] == [("node-d", "unreachable")]


async def test_a_parent_that_finishes_releases_at_the_sweep(ledger: Ledger) -> None:
    await family(ledger, "node-e", ["node-e.c0"], silent_s=TTL + 1)
    await convict(ledger, "node-e.c0")
    assert await held(ledger) == {"node-e.c0"}
    await apply_observation(ledger, Observation("node-e", State.STOPPING, Source.API))
    await apply_observation(ledger, Observation("node-e", State.STOPPED, Source.API))
    assert ledger.parents is not None
    assert await dependencies.release_idle(ledger.engine, ledger.parents, (HOOK,)) == 1
    assert [(w, e) for w, e, _ in await alerts(ledger)] == [("node-e.c0", "unreachable")]
