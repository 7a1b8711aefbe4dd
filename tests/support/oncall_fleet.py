"""A fleet with known stale, UNREACHABLE and LOST workloads, for the on-call tests.

Built through the real paths: registry.register, liveness (Redis zsets) and apply_observation
(Source.SWEEPER for UNREACHABLE/LOST), with sign-of-life times set in the past.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from statusd.lifecycle import Kind, Source, State
from statusd.liveness import mark_seen, on_registered
from statusd.registry import deregister, register
from statusd.runtime import Runtime
from statusd.transitions import Observation, apply_observation


@dataclass(frozen=True)
class Fleet:
    expected_order: list[str]  # the report, worst first
    healthy: list[str]


async def add(
    rt: Runtime,
    wid: str,
    kind: Kind,
    *,
    labels: dict[str, str] | None = None,
    states: tuple[State, ...] = (),
    seen_ago: float | None = None,
    registered_ago: float = 0.0,
    contact: tuple[State, ...] = (),
) -> None:
    """Register `wid`, push it through `states`, mark it seen `seen_ago` s ago, then `contact`."""
    now = time.time()
    await register(rt.engine, wid, kind, labels=labels or {})
    await on_registered(rt.redis, rt.keys, wid, now - registered_ago)
    # Heartbeats happened before the last sign of life, so SQL's last_seen_at is not fresher.
    pushed_at = datetime.fromtimestamp(now - (seen_ago or 0.0) - 1, UTC)
    for seq, state in enumerate(states, start=1):
        obs = Observation(wid, state, Source.PUSH, seq=seq, observed_at=pushed_at)
        await apply_observation(rt.ledger, obs)
    if seen_ago is not None:
        await mark_seen(rt.redis, rt.keys, {wid: (now - seen_ago, None)})
    for state in contact:
        await apply_observation(
            rt.ledger, Observation(wid, state, Source.SWEEPER, reason="test: no contact")
        )


async def build_fleet(rt: Runtime) -> Fleet:
    """TTL 30 s, start timeout 120 s (defaults). Ten workloads, six of them in the report."""
    await add(rt, "fresh-train", Kind.TRAINING, states=(State.RUNNING,), seen_ago=1)
    await add(
        rt,
        "quiet-train",
        Kind.TRAINING,
        states=(State.RUNNING,),
        seen_ago=100,
        labels={"owner": "bob", "project": "p1"},
    )
    await add(
        rt,
        "quiet-notebook",
        Kind.NOTEBOOK,
        states=(State.READY,),
        seen_ago=400,
        labels={"owner": "alice", "project": "p1"},
    )
    await add(
        rt,
        "unreachable-deploy",
        Kind.DEPLOYMENT,
        states=(State.READY,),
        seen_ago=60,
        contact=(State.UNREACHABLE,),
        labels={"owner": "alice"},
    )
    await add(
        rt,
        "lost-train",
        Kind.TRAINING,
        states=(State.RUNNING,),
        seen_ago=1000,
        contact=(State.UNREACHABLE, State.LOST),
        labels={"owner": "carol"},
    )
    await add(
        rt,
        "lost-notebook",
        Kind.NOTEBOOK,
        states=(State.READY,),
        seen_ago=500,
        contact=(State.UNREACHABLE, State.LOST),
    )
    await add(rt, "never-seen", Kind.DEPLOYMENT, registered_ago=700)
    await add(rt, "just-registered", Kind.DEPLOYMENT, registered_ago=5)
    await add(rt, "finished", Kind.TRAINING, states=(State.RUNNING, State.SUCCEEDED), seen_ago=5000)
    await add(rt, "retired", Kind.NOTEBOOK, states=(State.READY,), seen_ago=5000)
    await deregister(rt.engine, "retired")
    return Fleet(
        expected_order=[
            "lost-train",  # LOST, silent 1000 s
            "lost-notebook",  # LOST, 500 s
            "unreachable-deploy",  # UNREACHABLE
            "never-seen",  # stale: PENDING past the start timeout, 700 s since registration
            "quiet-notebook",  # stale 400 s
            "quiet-train",  # stale 100 s
        ],
        healthy=["fresh-train", "just-registered", "finished", "retired"],
    )
