"""Applying a planned batch: each workload's reports in seq order, retried in-process.

- the first report is skipped when the Redis state cache says it changes nothing (steady
  heartbeats write no SQL); the rest go through `apply_observation`;
- the lease is checked before every apply (fencing): a holder that lost it commits nothing more;
- the database or Redis unavailable (`statusd.errors.is_transient`): nothing counts as a failed
  delivery, the same batch is retried with capped backoff;
- anything else (poison): that workload is retried until `max_deliveries`, then its entries go
  to the dead letters (settle) while the rest of the shard flows on.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.exceptions import RedisError

from statusd.errors import StatusdError, UnknownWorkload, is_transient
from statusd.ingest.batch_plan import Batch, WorkloadPlan
from statusd.ingest.consumer_context import BACKOFF_CAP_S, BACKOFF_START_S, ConsumerContext, Shard
from statusd.ingest.outcomes import NOT_COUNTED, ConsumeOutcome
from statusd.ingest.reports import Report
from statusd.ingest.settle import Settler
from statusd.lifecycle import Source
from statusd.state_cache import CachedState
from statusd.transitions import Observation, apply_observation

log = structlog.get_logger("statusd.consumer")

POISON_RETRY_S = 0.05  # between in-process retries of a failing (non-transient) entry


class LeaseLost(StatusdError):
    """The shard's lease expired or was taken: commit nothing more for it."""


class BatchApplier:
    """Carries out batch plans for the shard loops of one ConsumerSet, then settles them."""

    def __init__(self, ctx: ConsumerContext, settler: Settler) -> None:
        self.ctx = ctx
        self.settler = settler

    async def process(self, shard: Shard, batch: Batch) -> None:
        """Apply a batch (retrying in-process), then ack what was handled; LeaseLost if fenced."""
        ctx = self.ctx
        backoff = BACKOFF_START_S
        while True:
            todo = [w for w in batch.workloads.values() if not w.finished]
            if not todo:
                break
            try:  # re-read on every retry: the state may have moved meanwhile
                cached = await ctx.runtime.cache.get_many(w.workload_id for w in todo)
            except (RedisError, OSError) as exc:
                log.warning("consumer.cache_unavailable", error=str(exc))
                transient, retry = True, False
            else:
                for w in todo:
                    w.transient = w.retry = w.fenced = False
                await asyncio.gather(
                    *(self._apply_workload(shard, w, cached.get(w.workload_id)) for w in todo)
                )
                transient = any(w.transient for w in todo)
                retry = any(w.retry for w in todo)
                if any(w.fenced for w in todo):
                    break
            if not (transient or retry) or ctx.stopping.is_set() or not shard.lease.valid():
                break  # stopping/fenced: ack what is done, the rest stays pending for the next holder
            if transient:
                log.warning(
                    "consumer.store_unavailable",
                    shard=shard.index,
                    retry_in=backoff,
                    workloads=len(todo),
                )
                await ctx.pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
            else:
                await ctx.pause(POISON_RETRY_S)
        pause = ctx.settings.consumer_pause_before_ack_s
        if pause and not ctx.stopping.is_set():
            log.warning("consumer.pausing_before_ack", seconds=pause)
            await asyncio.sleep(pause)
        await self.settler.settle(shard, batch)
        if not shard.lease.valid():
            raise LeaseLost(f"shard {shard.index}")

    async def _apply_workload(
        self, shard: Shard, w: WorkloadPlan, cached: CachedState | None
    ) -> None:
        outcomes = self.ctx.outcomes
        try:
            for index in range(w.done_upto + 1, len(w.reports)):
                report = w.reports[index]
                if (
                    index == 0
                    and cached is not None
                    and cached.makes_no_change(report.status.value, report.generation, report.seq)
                ):
                    outcomes[ConsumeOutcome.SKIPPED].inc()
                    w.counted_seq = report.seq
                else:
                    outcome = await self._apply(shard, report)
                    outcomes[outcome].inc()
                    if outcome not in NOT_COUNTED:
                        w.counted_seq = report.seq
                w.done_upto = index
                w.handled_seq = report.seq
        except LeaseLost:
            w.fenced = True
        except Exception as exc:
            if is_transient(exc):
                w.transient = True
                return
            w.attempts += 1
            error = f"{type(exc).__name__}: {exc}"
            if w.attempts < self.ctx.settings.max_deliveries:
                w.retry = True
                log.warning("consumer.apply_failed", workload_id=w.workload_id, error=error)
                return
            w.error = error
            outcomes[ConsumeOutcome.FAILED].inc()
            log.error("consumer.apply_failed", workload_id=w.workload_id, error=w.error)

    async def _apply(self, shard: Shard, report: Report) -> ConsumeOutcome:
        observation = Observation(
            report.workload_id,
            report.status,
            Source.PUSH,
            seq=report.seq,
            reason=report.detail,
            actor="heartbeat",
            generation=report.generation,
        )
        async with self.ctx.db_slots:
            # Fencing: checked after waiting for a slot, right before the transaction.
            if not shard.lease.valid():
                raise LeaseLost(f"shard {shard.index}")
            try:
                result = await apply_observation(self.ctx.runtime.ledger, observation)
            except UnknownWorkload:
                return ConsumeOutcome.UNKNOWN  # a deleted workload's container talking
        return ConsumeOutcome(result.outcome.value)
