"""Settling a batch: ack what was handled (after the DB commit), bury what keeps failing.

The ack pipeline also records each workload's newest seq (its registration bucket, never
backward; a replayed dead letter is older) and bumps the state cache's seq, because a skipped
report never reaches the database: one script, both are parts of one field. Burying is the lease
holder's decision: a holder that lost its lease leaves the entries pending. The state cache is
read by the apply step (statusd.ingest.apply_batch) and written here, in the ack."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from redis.exceptions import RedisError

from statusd.ingest import stream_dead_letters
from statusd.ingest.batch_outcome import Progress
from statusd.ingest.batch_plan import Batch
from statusd.ingest.consumer_context import BACKOFF_START_S, ConsumerContext, Shard
from statusd.ingest.outcomes import ConsumeOutcome
from statusd.ingest.retrying import while_holding
from statusd.redis_runtime import run_queued

log = structlog.get_logger("statusd.consumer")


class Settler:
    """Acks and dead letters for the batches of one ConsumerSet."""

    def __init__(self, ctx: ConsumerContext) -> None:
        self.ctx = ctx

    async def settle(self, shard: Shard, batch: Batch, progress: Mapping[str, Progress]) -> None:
        """Ack handled entries (+ newest seq per workload); bury the ones that keep failing.
        `progress`: what applying the batch came to (statusd.ingest.apply_batch)."""
        ack: list[bytes] = []
        newest: dict[str, int] = {}
        generations: dict[str, int] = {}
        failed: dict[bytes, tuple[str, int]] = {
            eid: (error, batch.deliveries.get(eid, 1)) for eid, error in batch.malformed.items()
        }
        for wid, plan in batch.workloads.items():
            done = progress[wid]
            if done.counted_seq is not None and done.counted_generation is not None:
                newest[wid] = done.counted_seq
                generations[wid] = done.counted_generation
            for entry_id, seq in plan.entries:
                if done.handled_seq is not None and seq <= done.handled_seq:
                    ack.append(entry_id)  # handled, or superseded by a handled newer report
                elif done.error is not None:
                    failed[entry_id] = (done.error, done.attempts)
        await self._ack(shard, ack, newest, generations)
        if not shard.lease.valid():
            return  # burying is the holder's decision; the next holder retries them
        for entry_id, (error, deliveries) in failed.items():
            await self._bury(shard, entry_id, batch.raw[entry_id], error, deliveries)

    async def _ack(
        self, shard: Shard, ack: list[bytes], newest: dict[str, int], generations: dict[str, int]
    ) -> None:
        if not (ack or newest):
            return
        # Committed but not acked: retrying is safe (a redelivery is a seq no-op), giving up is
        # too (the entries stay pending and the next holder takes them over).
        try:  # the common case, without tenacity's per-call cost
            await self._ack_once(shard, ack, newest, generations)
            return
        except (RedisError, OSError) as exc:
            log.warning("consumer.ack_failed", shard=shard.index, error=str(exc))
        retrying = while_holding(self.ctx, shard, "consumer.ack_failed", (RedisError, OSError))
        try:
            await self.ctx.pause(BACKOFF_START_S)
            await retrying(self._ack_once, shard, ack, newest, generations)
        except (RedisError, OSError):
            return

    async def _ack_once(
        self, shard: Shard, ack: list[bytes], newest: dict[str, int], generations: dict[str, int]
    ) -> None:
        ctx = self.ctx
        cache = ctx.runtime.cache

        # One round trip, safe to repeat (run_queued sends it again after loading a script):
        # XACK, then one script call per workload shard (= this shard, unless
        # STATUSD_STREAM_SHARDS changed while entries were queued: one slot each) raising the
        # registration's seq and, since skipped reports never reach the DB, the cache's.
        def fill(pipe: Any) -> None:
            if ack:
                pipe.xack(shard.stream, ctx.keys.consumer_group, *ack)
            cache.queue_record_seqs(pipe, {w: (s, generations.get(w)) for w, s in newest.items()})

        await run_queued(ctx.redis, cache.record_scripts, fill)

    async def _bury(
        self,
        shard: Shard,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        error: str,
        deliveries: int,
    ) -> None:
        ctx = self.ctx
        try:
            await stream_dead_letters.bury(
                ctx.redis, ctx.keys, shard.stream, entry_id, fields, error, deliveries
            )
        except (RedisError, OSError) as exc:
            log.warning("consumer.bury_failed", entry_id=entry_id.decode(), error=str(exc))
            return  # still pending: taken over (and retried) by the next holder
        ctx.outcomes[ConsumeOutcome.DEAD_LETTER].inc()
        log.error(
            "consumer.dead_letter", entry_id=entry_id.decode(), error=error, deliveries=deliveries
        )
