"""Applying a planned batch: each workload's reports in seq order, retried in-process.

- the first report is skipped when the Redis state cache says it changes nothing (steady
  heartbeats write no SQL); the rest of the batch goes through `apply_observations` at once:
  one transaction for the whole batch (a poison report is retried apart by it);
- the lease is checked right before the first read and right before the commit (fencing): a
  holder that lost it commits nothing more;
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
from statusd.transitions import Observation, Result, apply_observations

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
                await self._apply_all(shard, todo, cached)
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

    async def _apply_all(
        self, shard: Shard, todo: list[WorkloadPlan], cached: dict[str, CachedState]
    ) -> None:
        """Apply every workload's remaining reports in one transaction (statusd.transitions
        retries the rest one by one if a poison report fails it), then record each outcome."""
        pending = self._skip_steady(todo, cached)
        if not pending:
            return

        def fence() -> None:  # checked right before the first read and right before the commit
            if not shard.lease.valid():
                raise LeaseLost(f"shard {shard.index}")

        try:
            async with self.ctx.db_slots:
                answers = await apply_observations(
                    self.ctx.runtime.ledger,
                    [_observation(w.reports[index]) for w, index in pending],
                    guard=fence,
                )
        except LeaseLost:
            for w in todo:
                w.fenced = True
            return
        except Exception as exc:
            if not is_transient(exc):
                raise  # apply_observations answers a poison observation; anything else is a bug
            for w in todo:
                w.transient = True
            return
        for (w, index), answer in zip(pending, answers, strict=True):
            self._record(w, index, answer)
        await self._forget_entries_ahead(pending, answers, cached)

    async def _forget_entries_ahead(
        self,
        pending: list[tuple[WorkloadPlan, int]],
        answers: list[Result | Exception],
        cached: dict[str, CachedState],
    ) -> None:
        """A cache entry at a newer version than the database's own row can only come from
        commits the database no longer has (a failover to a replica that had not received them).
        Versions only grow, so the entry would refuse every store and its state would keep
        steady reports off the database until it expires. A tombstone one past the database's
        version takes its place: a miss, until a commit at that version stores over it."""
        last = {
            w.workload_id: answer
            for (w, _), answer in zip(pending, answers, strict=True)
            if isinstance(answer, Result)
        }
        ahead = {
            wid: answer.version + 1
            for wid, answer in last.items()
            if (entry := cached.get(wid)) is not None and entry.version > answer.version
        }
        if not ahead:
            return
        log.warning("consumer.cache_ahead_of_database", workloads=sorted(ahead))
        try:
            await self.ctx.runtime.cache.invalidate_many(ahead)
        except (RedisError, OSError) as exc:  # the same reports meet the same entry next time
            log.warning("consumer.cache_unavailable", error=str(exc))

    def _skip_steady(
        self, todo: list[WorkloadPlan], cached: dict[str, CachedState]
    ) -> list[tuple[WorkloadPlan, int]]:
        """(workload, report index) of every report to apply; a first report that the state cache
        says changes nothing is handled here, without SQL (steady heartbeats)."""
        pending: list[tuple[WorkloadPlan, int]] = []
        for w in todo:
            start = w.done_upto + 1
            first = w.reports[start]
            state = cached.get(w.workload_id)
            if (
                start == 0
                and state is not None
                and state.makes_no_change(first.status.value, first.generation, first.seq)
            ):
                self.ctx.outcomes[ConsumeOutcome.SKIPPED].inc()
                w.counted_seq = w.handled_seq = first.seq
                w.done_upto = start
                start += 1
            pending += [(w, index) for index in range(start, len(w.reports))]
        return pending

    def _record(self, w: WorkloadPlan, index: int, answer: Result | Exception) -> None:
        if w.done_upto >= index or w.retry or w.error is not None:
            return  # an earlier report of this workload failed: this one waits for it
        if isinstance(answer, UnknownWorkload):
            outcome = ConsumeOutcome.UNKNOWN  # a deleted workload's container talking
        elif isinstance(answer, Exception):
            self._failed(w, answer)
            return
        else:
            outcome = ConsumeOutcome(answer.outcome.value)
        self.ctx.outcomes[outcome].inc()
        report = w.reports[index]
        if outcome not in NOT_COUNTED:
            w.counted_seq = report.seq
        w.done_upto = index
        w.handled_seq = report.seq

    def _failed(self, w: WorkloadPlan, exc: Exception) -> None:
        """A poison report: retried until max_deliveries, then its entries go to the dead letters."""
        w.attempts += 1
        error = f"{type(exc).__name__}: {exc}"
        if w.attempts < self.ctx.settings.max_deliveries:
            w.retry = True
            log.warning("consumer.apply_failed", workload_id=w.workload_id, error=error)
            return
        w.error = error
        self.ctx.outcomes[ConsumeOutcome.FAILED].inc()
        log.error("consumer.apply_failed", workload_id=w.workload_id, error=w.error)


def _observation(report: Report) -> Observation:
    return Observation(
        report.workload_id,
        report.status,
        Source.PUSH,
        seq=report.seq,
        reason=report.detail,
        actor="heartbeat",
        generation=report.generation,
    )
