"""Prompt outbox drain after a new transition: a post-commit listener, wired by statusd.wiring.

Debounced in Redis (SET NX PX on `keys.sync_kick`): in a burst, one kick per window, for every
process together. The drain is asked for one window later (through the runtime's drain-kick
hook, statusd.runtime.DrainKick), so it runs after every transition committed inside that window.
A lost kick costs latency only: beat's `statusd.sync.drain_due` drains everything anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.lifecycle import CONTACT_STATES
from statusd.runtime import DrainKick
from statusd.settings import Settings
from statusd.transitions import AppliedTransition, TransitionListener


async def claim_window(redis: Redis, keys: Keys, settings: Settings) -> bool:
    """Win the debounce window (`keys.sync_kick`, SET NX PX): only the winner sends a drain task.

    Shared by the post-commit kick and a drain continuing itself, so however many transitions
    and drains there are, at most one drain is sent per window."""
    return bool(await redis.set(keys.sync_kick, b"1", nx=True, px=settings.sync_kick_debounce_ms))


def sync_kick_listener(
    settings: Settings, redis: Redis, keys: Keys, kick_drain: DrainKick
) -> TransitionListener:
    """Post-commit: ask a sync worker to drain soon (debounced). Beat drains anyway if this is lost."""
    window_ms = settings.sync_kick_debounce_ms
    if not settings.main_api_url and not settings.alerting_on:

        async def nothing_to_send(batch: Sequence[AppliedTransition]) -> None:
            return None  # sync disabled and no alert destinations: nothing to drain

        return nothing_to_send

    async def kick(batch: Sequence[AppliedTransition]) -> None:
        if not settings.main_api_url and not any(
            {t.from_state, t.to_state} & CONTACT_STATES for t in batch
        ):
            return  # only alert rows would be waiting, and only contact changes write those
        if not await claim_window(redis, keys, settings):
            return  # a drain is already scheduled for the end of this window
        kick_drain(window_ms / 1000)

    return kick
