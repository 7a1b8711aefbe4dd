"""Prompt outbox drain after a new transition. Owned by the sync work; wired by statusd.runtime."""

from __future__ import annotations

from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.settings import Settings
from statusd.transitions import AppliedTransition, TransitionListener


def sync_kick_listener(settings: Settings, redis: Redis, keys: Keys) -> TransitionListener:
    """Post-commit: ask a sync worker to drain soon (debounced). Beat drains anyway if this is lost."""

    async def kick(t: AppliedTransition) -> None:
        return None  # filled in by the main-DB sync issue

    return kick
