"""Live transition events (SSE). Owned by the on-call work; the listener is wired by statusd.wiring."""

from __future__ import annotations

from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.transitions import AppliedTransition, TransitionListener


def publish_listener(redis: Redis, keys: Keys) -> TransitionListener:
    """Post-commit: wake SSE streams (a hint only; they read committed rows from the DB)."""

    async def publish(t: AppliedTransition) -> None:
        await redis.publish(keys.events_channel, str(t.id))

    return publish
