"""How the consumer retries a call against a store that is briefly unavailable (tenacity).

The budget is the shard's lease: a call is retried, with capped exponential backoff and a WARNING
before each sleep, for as long as this process holds the shard and is not stopping. Giving up is
always safe there: what was not acked stays pending, and the next holder takes it over.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from statusd.ingest.consumer_context import BACKOFF_CAP_S, BACKOFF_START_S, ConsumerContext, Shard

log = structlog.get_logger("statusd.consumer")


def while_holding(
    ctx: ConsumerContext,
    shard: Shard,
    event: str,
    transient: tuple[type[BaseException], ...],
) -> AsyncRetrying:
    """Retry `transient` errors while `shard` is ours; the last error is raised when it is not."""

    def released(_: RetryCallState) -> bool:
        return ctx.stopping.is_set() or not shard.lease.valid()

    return AsyncRetrying(
        retry=retry_if_exception_type(transient),
        wait=wait_exponential(multiplier=BACKOFF_START_S, max=BACKOFF_CAP_S),
        stop=released,
        sleep=ctx.pause,  # wakes at once when stopping
        before_sleep=_warn(event, shard),
        reraise=True,
    )


def _warn(event: str, shard: Shard) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(event, shard=shard.index, error=str(error), retry_in=round(sleep, 3))

    return before_sleep
