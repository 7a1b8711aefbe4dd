"""Live transition events (SSE). Owned by the on-call work; the listener is wired by statusd.wiring."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.transitions import AppliedTransition, TransitionListener


def publish_listener(redis: Redis, keys: Keys) -> TransitionListener:
    """Post-commit: wake SSE streams (a hint only; they read committed rows from the DB), once
    per committed batch with its newest transition id."""

    async def publish(batch: Sequence[AppliedTransition]) -> None:
        await redis.publish(keys.events_channel, str(max(t.id for t in batch)))

    return publish
