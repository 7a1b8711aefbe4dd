"""One held shard's loop: take over the previous holder's pending entries, then read new ones.

Strictly in stream order, one batch at a time, while the lease holds:
1. On acquiring the shard, take over its pending entries first (XAUTOCLAIM, min-idle 0: safe,
   because the previous holder stopped committing at its fencing deadline, before our lease
   could exist), and apply them before reading new ones (XREADGROUP ">").
2. Then, once per lease ttl, a take-over sweep for entries idle that long (a holder that lost
   its lease early read them after we took over): nothing stays pending forever.
3. Each read takes our own pending entries (id 0) before new ones: an entry delivered to us
   whose reply we never saw (a partition, a timed-out read) is applied in its order.
4. On leaving (released, lost, stopping), the lease is handed over at once if still ours.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

import structlog
from redis.exceptions import RedisError, ResponseError

from statusd.ingest.apply_batch import BatchApplier, LeaseLost
from statusd.ingest.batch_plan import Entry, plan_batch
from statusd.ingest.consumer_context import (
    BACKOFF_CAP_S,
    BACKOFF_START_S,
    ConsumerContext,
    Member,
    Shard,
)
from statusd.ingest.outcomes import ConsumeOutcome
from statusd.ingest.streams import ensure_groups

log = structlog.get_logger("statusd.consumer")


class ShardLoop:
    """Runs the loop of every shard a member of this ConsumerSet acquires."""

    def __init__(self, ctx: ConsumerContext, applier: BatchApplier) -> None:
        self.ctx = ctx
        self.applier = applier

    async def run(self, member: Member, shard: Shard) -> None:
        """Apply one shard strictly in stream order while its lease holds."""
        ctx = self.ctx
        # Not tenacity: this is the shard's whole run, not one call retried; it outlives any
        # error, a good step resets the backoff, and NOGROUP is repaired without one.
        backoff = BACKOFF_START_S
        try:
            while not ctx.stopping.is_set() and shard.active():
                try:
                    await self._step(member, shard)
                    backoff = BACKOFF_START_S
                    continue
                except LeaseLost:
                    break
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):  # stream or group gone (Redis lost its data)
                        log.warning("consumer.no_group", shard=shard.index)
                        await self._guarded(ensure_groups(ctx.redis, ctx.keys, ctx.shards))
                        continue
                    log.error("consumer.read_failed", shard=shard.index, error=str(exc))
                except (RedisError, OSError) as exc:
                    log.warning("consumer.redis_unavailable", shard=shard.index, error=str(exc))
                except Exception:  # a bug must not kill the loop silently; entries stay pending
                    log.exception("consumer.failed", shard=shard.index)
                await ctx.pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
        finally:
            await self._leave(member, shard)

    async def _step(self, member: Member, shard: Shard) -> None:
        """One turn of a shard's loop: a take-over pass when due, else one read and its batch."""
        ctx = self.ctx
        if shard.sweep_at is None or time.monotonic() >= shard.sweep_at:
            # First the previous holder's pending entries, all of them, in order, before anything
            # new. Later, once per lease ttl, a sweep for entries that a holder who lost its lease
            # early (stolen, Redis lost the key) read after we took over: nothing stays pending
            # forever, even where order could not be kept.
            first = shard.sweep_at is None
            await self._take_over(member, shard, 0 if first else ctx.ttl_ms)
            shard.sweep_at = time.monotonic() + ctx.ttl_ms / 1000
            return
        async with ctx.reads:
            if not shard.active():
                return
            entries, deliveries = await self._read(member, shard)
        batch = plan_batch(entries, deliveries, ctx.outcomes[ConsumeOutcome.COLLAPSED])
        if batch is not None:
            await self.applier.process(shard, batch)
        if entries and len(entries) < ctx.settings.consumer_batch and ctx.linger_s:
            # A small batch: let the next few arrive first (STATUSD_CONSUMER_LINGER_MS). Each
            # batch costs a read, a cache script and an ack round trip whatever its size.
            await ctx.pause(ctx.linger_s)

    async def _read(self, member: Member, shard: Shard) -> tuple[list[Entry], dict[bytes, int]]:
        """Our own pending entries, then new ones, in one round trip; in stream order.

        An entry can be delivered to us without our seeing it: a blocking read that Redis served
        while a partition swallowed its reply, a read retransmitted by the kernel after we gave
        up on it. Read only ">" and the next batch would carry newer reports of the same
        workloads, applied first, and the lost ones would come back at the next take-over sweep
        only to be dropped as stale: accepted changes missing from the history. Our pending list
        (id 0) is empty unless that happened, so reading it first costs one empty reply."""
        ctx = self.ctx
        group, batch = ctx.keys.consumer_group, ctx.settings.consumer_batch
        pipe = ctx.redis.pipeline(transaction=False)
        pipe.xreadgroup(group, member.name, {shard.stream: "0"}, count=batch)
        pipe.xreadgroup(group, member.name, {shard.stream: ">"}, count=batch, block=ctx.block_ms)
        mine_reply, new_reply = await pipe.execute()
        new: list[Entry] = new_reply[0][1] if new_reply else []
        mine: list[Entry] = mine_reply[0][1] if mine_reply else []
        if not mine:
            return new, {}
        gone = [eid for eid, fields in mine if not fields]  # trimmed while pending: nothing to do
        if gone:
            await ctx.redis.xack(shard.stream, group, *gone)
        mine = [e for e in mine if e[1]]
        log.warning("consumer.own_pending_read", shard=shard.index, entries=len(mine))
        if not mine:
            return new, {}
        # Each was delivered before (that delivery ended without an ack): counted, as for a
        # take-over, so that one that keeps failing still ends in the dead letters.
        deliveries = await self._deliveries(shard, member.name, [eid for eid, _ in mine])
        return mine + new, deliveries

    async def _leave(self, member: Member, shard: Shard) -> None:
        member.shards.pop(shard.index, None)
        if shard.lease.valid():  # a release or a clean stop: hand it over at once
            try:
                await self.ctx.leases.release(shard.lease)
                log.info("consumer.shard_released", consumer=member.name, shard=shard.index)
            except (RedisError, OSError):
                shard.lease.lose()  # it expires by itself
        else:
            log.info("consumer.shard_left", consumer=member.name, shard=shard.index)

    async def _guarded(self, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except (RedisError, OSError) as exc:
            log.warning("consumer.redis_unavailable", error=str(exc))
            await self.ctx.pause(BACKOFF_START_S)

    async def _take_over(self, member: Member, shard: Shard, min_idle_ms: int) -> None:
        """Claim the shard's pending entries idle >= min_idle_ms, oldest first, and apply them."""
        ctx = self.ctx
        cursor: bytes | str = "0-0"
        while not ctx.stopping.is_set() and shard.active():
            reply: Any = await ctx.redis.xautoclaim(
                shard.stream,
                ctx.keys.consumer_group,
                member.name,
                min_idle_time=min_idle_ms,
                start_id=cursor,
                count=ctx.settings.consumer_batch,
            )
            cursor, entries = reply[0], [e for e in reply[1] if e[1]]
            if entries:
                log.info("consumer.took_over", shard=shard.index, entries=len(entries))
                deliveries = await self._deliveries(shard, member.name, [eid for eid, _ in entries])
                batch = plan_batch(entries, deliveries, ctx.outcomes[ConsumeOutcome.COLLAPSED])
                if batch is not None:
                    await self.applier.process(shard, batch)
            if cursor in (b"0-0", "0-0"):
                return

    async def _deliveries(self, shard: Shard, consumer: str, ids: list[bytes]) -> dict[bytes, int]:
        rows = await self.ctx.redis.xpending_range(
            shard.stream,
            self.ctx.keys.consumer_group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) + 100,
            consumername=consumer,
        )
        wanted = set(ids)
        return {
            row["message_id"]: int(row["times_delivered"])
            for row in rows
            if row["message_id"] in wanted
        }
