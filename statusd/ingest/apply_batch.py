"""Applying a planned batch: each workload's reports in seq order, retried in-process.

Each round takes the previous round's progress (statusd.ingest.batch_outcome) and returns a new
one, never changing a value in place:
- the first report is skipped when the Redis state cache says it changes nothing (steady
  heartbeats write no SQL); the rest of the batch goes through `apply_observations` at once:
  one transaction for the whole batch (a poison report is retried apart by it);
- the lease is checked right before the first read and right before the commit (fencing): a
  holder that lost it commits nothing more;
- the database or Redis unavailable (`statusd.errors.is_transient`): nothing counts as a failed
  delivery, the same work is retried with capped backoff;
- anything else (poison): that workload is retried until `max_deliveries`, then its entries go
  to the dead letters (settle) while the rest of the shard flows on.
Rounds are retried (tenacity) while any is due again and the lease holds; the last round's
progress is what settling acks and buries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import cast

import structlog
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, wait_exponential

from statusd.errors import StatusdError, UnknownWorkload, is_transient
from statusd.ingest.batch_outcome import Progress, Round, first_round
from statusd.ingest.batch_plan import Batch, WorkloadPlan
from statusd.ingest.consumer_context import BACKOFF_CAP_S, BACKOFF_START_S, ConsumerContext, Shard
from statusd.ingest.outcomes import NOT_COUNTED, ConsumeOutcome
from statusd.ingest.settle import Settler
from statusd.ingest.stream_reports import Report
from statusd.lifecycle import Source
from statusd.state_cache import CachedState
from statusd.transitions import Observation, Result, apply_observations

log = structlog.get_logger("statusd.consumer")

POISON_RETRY_S = 0.05  # between in-process retries of a failing (non-transient) entry
_BACKOFF = wait_exponential(multiplier=BACKOFF_START_S, max=BACKOFF_CAP_S)


class LeaseLost(StatusdError):
    """The shard's lease expired or was taken: commit nothing more for it."""


def _round_of(state: RetryCallState) -> Round:
    """The round an attempt returned (tenacity asks only after one)."""
    if state.outcome is None:
        raise RuntimeError("no apply round ran yet")
    return cast(Round, state.outcome.result())


def _wait(state: RetryCallState) -> float:
    """Store unavailable: capped exponential backoff; a poison report: a short pause."""
    return _BACKOFF(state) if _round_of(state).transient else POISON_RETRY_S


class BatchApplier:
    """Carries out batch plans for the shard loops of one ConsumerSet, then settles them."""

    def __init__(self, ctx: ConsumerContext, settler: Settler) -> None:
        self.ctx = ctx
        self.settler = settler

    async def process(self, shard: Shard, batch: Batch) -> None:
        """Apply a batch (retrying in-process), then ack what was handled; LeaseLost if fenced."""
        ctx = self.ctx
        # Almost every batch is done in one round: that one runs without tenacity, whose
        # per-call machinery was a fifth of a consumer's Python time at low rates.
        last = await self._round(shard, batch, first_round(batch).progress)
        if last.again and not ctx.stopping.is_set() and shard.lease.valid():
            await self._retry(shard, batch, last)
        else:
            await self._settle(shard, batch, last)

    async def _retry(self, shard: Shard, batch: Batch, first: Round) -> None:
        """The rare batch whose first round must be retried: the rounds after it, paced by
        tenacity (capped backoff while the store is unavailable, a short pause for poison)."""
        ctx = self.ctx
        last = first
        wait = BACKOFF_START_S if first.transient else POISON_RETRY_S
        if first.transient:
            log.warning("consumer.store_unavailable", shard=shard.index, retry_in=wait)
        await ctx.pause(wait)

        async def step() -> Round:
            nonlocal last
            last = await self._round(shard, batch, last.progress)
            return last

        def before_sleep(state: RetryCallState) -> None:
            if _round_of(state).transient:
                log.warning(
                    "consumer.store_unavailable",
                    shard=shard.index,
                    retry_in=round(state.next_action.sleep if state.next_action else 0.0, 3),
                )

        retrying = AsyncRetrying(
            retry=retry_if_result(lambda r: r.again),
            # Stopping or fenced: ack what is done, the rest stays pending for the next holder.
            stop=lambda _: ctx.stopping.is_set() or not shard.lease.valid(),
            wait=_wait,
            sleep=ctx.pause,
            before_sleep=before_sleep,
            retry_error_callback=_round_of,
        )
        if not (ctx.stopping.is_set() or not shard.lease.valid()):
            await retrying(step)
        await self._settle(shard, batch, last)

    async def _settle(self, shard: Shard, batch: Batch, last: Round) -> None:
        """Ack what the last round handled; LeaseLost if fenced meanwhile."""
        ctx = self.ctx
        pause = ctx.settings.consumer_pause_before_ack_s
        if pause and not ctx.stopping.is_set():
            log.warning("consumer.pausing_before_ack", seconds=pause)
            await asyncio.sleep(pause)
        await self.settler.settle(shard, batch, last.progress)
        if not shard.lease.valid():
            raise LeaseLost(f"shard {shard.index}")

    async def _round(self, shard: Shard, batch: Batch, progress: Mapping[str, Progress]) -> Round:
        """One round over the unfinished workloads: their state re-read (it may have moved since
        the last round), the steady ones skipped, the rest applied in one transaction."""
        todo = [p for wid, p in batch.workloads.items() if not progress[wid].finished(p)]
        if not todo:
            return Round(progress)
        try:
            cached = await self.ctx.runtime.cache.get_many(p.workload_id for p in todo)
        except (RedisError, OSError) as exc:
            log.warning("consumer.cache_unavailable", error=str(exc))
            return Round(progress, transient=True)
        return await self._apply_all(shard, todo, dict(progress), cached)

    async def _apply_all(
        self,
        shard: Shard,
        todo: list[WorkloadPlan],
        progress: dict[str, Progress],
        cached: dict[str, CachedState],
    ) -> Round:
        """Apply every workload's remaining reports in one transaction (statusd.transitions
        retries the rest one by one if a poison report fails it); `progress` is this round's own
        copy, filled with each workload's new value."""
        pending = self._skip_steady(todo, progress, cached)
        if not pending:
            return Round(progress)

        def fence() -> None:  # checked right before the first read and right before the commit
            if not shard.lease.valid():
                raise LeaseLost(f"shard {shard.index}")

        try:
            async with self.ctx.db_slots:
                answers = await apply_observations(
                    self.ctx.runtime.ledger,
                    [_observation(plan.reports[index]) for plan, index in pending],
                    guard=fence,
                )
        except LeaseLost:
            return Round(progress, fenced=True)
        except Exception as exc:
            if not is_transient(exc):
                raise  # apply_observations answers a poison observation; anything else is a bug
            return Round(progress, transient=True)
        failed: set[str] = set()  # an earlier report failed this round: the later ones wait
        for (plan, index), answer in zip(pending, answers, strict=True):
            wid = plan.workload_id
            now = progress[wid]
            if now.done_upto >= index or wid in failed or now.error is not None:
                continue
            if isinstance(answer, UnknownWorkload):
                outcome = ConsumeOutcome.UNKNOWN  # a deleted workload's container talking
            elif isinstance(answer, Exception):
                failed.add(wid)
                progress[wid] = self._failed(wid, now, answer)
                continue
            else:
                outcome = ConsumeOutcome(answer.outcome.value)
            self.ctx.outcomes[outcome].inc()
            progress[wid] = _handled(now, index, plan.reports[index], outcome not in NOT_COUNTED)
        await self._forget_entries_ahead(pending, answers, cached)
        retry = any(progress[wid].error is None for wid in failed)
        return Round(progress, retry=retry)

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
            plan.workload_id: answer
            for (plan, _), answer in zip(pending, answers, strict=True)
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
        self,
        todo: list[WorkloadPlan],
        progress: dict[str, Progress],
        cached: dict[str, CachedState],
    ) -> list[tuple[WorkloadPlan, int]]:
        """(workload, report index) of every report to apply; a first report that the state cache
        says changes nothing is handled here, without SQL (steady heartbeats)."""
        pending: list[tuple[WorkloadPlan, int]] = []
        skipped = 0
        for plan in todo:
            now = progress[plan.workload_id]
            start = now.done_upto + 1
            first = plan.reports[start]
            state = cached.get(plan.workload_id)
            if (
                start == 0
                and state is not None
                and state.makes_no_change(first.status.value, first.generation, first.seq)
            ):
                skipped += 1
                progress[plan.workload_id] = _handled(now, 0, first, counted=True)
                start = 1
            pending += [(plan, index) for index in range(start, len(plan.reports))]
        if skipped:
            self.ctx.outcomes[ConsumeOutcome.SKIPPED].inc(skipped)
        return pending

    def _failed(self, workload_id: str, now: Progress, exc: Exception) -> Progress:
        """A poison report: retried until max_deliveries, then its entries go to the dead letters."""
        attempts = now.attempts + 1
        error = f"{type(exc).__name__}: {exc}"
        if attempts < self.ctx.settings.max_deliveries:
            log.warning("consumer.apply_failed", workload_id=workload_id, error=error)
            return _with(now, attempts=attempts)
        self.ctx.outcomes[ConsumeOutcome.FAILED].inc()
        log.error("consumer.apply_failed", workload_id=workload_id, error=error)
        return _with(now, attempts=attempts, error=error)


def _handled(now: Progress, index: int, report: Report, counted: bool) -> Progress:
    """`now` with report `index` handled for good (`counted`: a sign of life of this
    registration)."""
    return Progress(
        done_upto=index,
        handled_seq=report.seq,
        counted_seq=report.seq if counted else now.counted_seq,
        counted_generation=report.generation if counted else now.counted_generation,
        attempts=now.attempts,
        error=now.error,
    )


def _with(now: Progress, *, attempts: int, error: str | None = None) -> Progress:
    return Progress(
        now.done_upto, now.handled_seq, now.counted_seq, now.counted_generation, attempts, error
    )


def _observation(report: Report) -> Observation:
    return Observation(
        report.workload_id,
        report.status,
        Source.PUSH,
        seq=report.seq,
        reason=report.detail,
        actor="heartbeat",
        generation=report.generation,
        heard_at=report.taken_at,
    )
