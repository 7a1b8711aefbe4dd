"""One held shard's loop: every pending entry of the shard first, then new ones.

Strictly in stream order, one batch at a time, while the lease holds. Each read is one round
trip: XAUTOCLAIM (min-idle 0) of every entry pending in the group for this shard, then
XREADGROUP ">". Claiming everything is safe while we hold the lease: an earlier holder stopped
committing at its fencing deadline, before our lease could exist, and our own batches are done
before the next read. So the first reads after acquiring the shard take over what a dead or
fenced holder left, and any later pending entry is one whose delivery nobody saw (a reply lost to
a partition, a read retransmitted after its consumer gave up): applied in its order too.
On leaving (released, lost, stopping), the lease is handed over at once if still ours.
"""

from __future__ import annotations

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
from statusd.ingest.streams import ensure_groups, text

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
        """One turn of a shard's loop: one read and its batch."""
        ctx = self.ctx
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
        """Every pending entry of the shard, then new ones, in one round trip; in stream order.

        While we hold the lease nothing of this shard is in flight anywhere else (an earlier
        holder is past its deadline) nor of ours (one batch at a time), so a pending entry is one
        whose delivery nobody saw: a blocking read of ours that Redis served while a partition
        swallowed its reply, or a read the kernel retransmitted after its consumer (us, or one
        that has since lost the lease) gave up on it. Read only ">" and the next batch would
        carry newer reports of the same workloads, applied first; the lost ones, claimed later,
        would be dropped as stale: accepted changes missing from the history. So each read
        claims them first; there are none unless that happened, and then it costs one empty
        reply.

        The same round trip reads the lease key first. A server restarted empty, or one that
        another consumer's SET reached after ours expired there, can have handed the shard on
        while our deadline still holds: a holder that sees another name, or none, leaves at once
        instead of reading on until its next renewal. What this read delivered stays pending for
        the next holder, which claims it first."""
        ctx = self.ctx
        group, batch = ctx.keys.consumer_group, ctx.settings.consumer_batch
        pipe = ctx.redis.pipeline(transaction=False)
        pipe.get(shard.lease.key)
        pipe.xautoclaim(
            shard.stream, group, member.name, min_idle_time=0, start_id="0-0", count=batch
        )
        pipe.xreadgroup(group, member.name, {shard.stream: ">"}, count=batch, block=ctx.block_ms)
        holder, claimed_reply, new_reply = await pipe.execute()
        if holder is None or text(holder) != shard.lease.owner:
            shard.lease.lose()
            log.warning(
                "consumer.lease_gone",
                consumer=member.name,
                shard=shard.index,
                holder=None if holder is None else text(holder),
            )
            raise LeaseLost(f"shard {shard.index}")
        new: list[Entry] = new_reply[0][1] if new_reply else []
        cursor = claimed_reply[0]
        claimed: list[Entry] = [e for e in claimed_reply[1] if e[1]]  # trimmed ones: dropped
        more = cursor not in (b"0-0", "0-0")
        if not claimed and not more:
            return new, {}
        deliveries: dict[bytes, int] = {}
        if claimed:
            log.warning("consumer.took_over", shard=shard.index, entries=len(claimed))
            # Each was delivered before without an ack: counted, as for a take-over, so that one
            # that keeps failing still ends in the dead letters.
            ids = [eid for eid, _ in claimed]
            deliveries = await self._deliveries(shard, member.name, ids)
        # More pending than one batch: the new entries (pending under us now) come after them,
        # claimed by the next read in their order.
        return (claimed if more else claimed + new), deliveries

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
