"""Per-process transition counter, attached to every Runtime by statusd.wiring.

It counts each applied transition (statusd_transitions_total{kind,from_state,to_state,source})
in a post-commit listener, so statusd.transitions stays about state. Each process exposes its
own metrics (statusd.oncall.metrics_endpoint); nothing is pushed anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from statusd.metrics import TRANSITIONS
from statusd.transitions import AppliedTransition, TransitionListener


def count_transitions() -> TransitionListener:
    """Post-commit: one increment per committed transition."""

    async def count(batch: Sequence[AppliedTransition]) -> None:
        for t in batch:
            TRANSITIONS.labels(
                kind=t.kind.value,
                from_state=t.from_state.value,
                to_state=t.to_state.value,
                source=t.source.value,
            ).inc()

    return count
