"""Per-process metrics wiring, applied by statusd.runtime.open_runtime to every Runtime.

- counts each applied transition (statusd_transitions_total{kind,from_state,to_state,source})
  in a post-commit listener, so statusd.transitions stays about state;
- starts this process's metrics pusher (statusd.oncall.metrics_fleet) and stops it, with a final
  push, when the Runtime closes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from statusd.metrics import TRANSITIONS
from statusd.oncall.metrics_fleet import acquire_pusher, release_pusher
from statusd.redis_runtime import resolve_redis_url
from statusd.transitions import AppliedTransition, TransitionListener

if TYPE_CHECKING:
    from statusd.runtime import Runtime


def count_transitions() -> TransitionListener:
    """Post-commit: one increment per committed transition."""

    async def count(t: AppliedTransition) -> None:
        TRANSITIONS.labels(
            kind=t.kind.value,
            from_state=t.from_state.value,
            to_state=t.to_state.value,
            source=t.source.value,
        ).inc()

    return count


def instrument_runtime(runtime: Runtime) -> None:
    """Add the transition counter and this process's metrics pusher to `runtime`."""
    runtime.ledger.listeners.append(count_transitions())
    url = resolve_redis_url(runtime.settings.redis_url)
    if url is None:
        return
    pusher = acquire_pusher(url, runtime.keys, runtime.settings.metrics_push_interval)

    async def stop_pushing() -> None:
        import asyncio

        await asyncio.to_thread(release_pusher, pusher)

    runtime.on_close.append(stop_pushing)
