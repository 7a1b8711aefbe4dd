"""Balancing: each consumer checks in, renews its leases and holds its fair share of shards.

Every lease-ttl/3 a member checks in (a set of live consumers with a ttl), renews what it holds,
and aims for ceil(shards / live consumers): it acquires free shards up to that (starting at a
per-member offset, so members racing for free shards rarely collide) and marks the extras for
release after their in-flight batch, so a newly started process gets its share within seconds.
"""

from __future__ import annotations

import asyncio
import math
import zlib

import structlog
from redis.exceptions import RedisError

from statusd.ingest.consumer_context import ConsumerContext, Member, Shard
from statusd.ingest.shard_loop import ShardLoop

log = structlog.get_logger("statusd.consumer")


class Balancer:
    """Steers the members of one ConsumerSet; starts a ShardLoop task per acquired shard."""

    def __init__(self, ctx: ConsumerContext, loop: ShardLoop) -> None:
        self.ctx = ctx
        self.loop = loop
        self.shard_tasks: set[asyncio.Task[None]] = set()

    async def steer(self, member: Member) -> None:
        """Check in, renew and balance every ttl/3 until stopping; then check out."""
        ctx = self.ctx
        interval = ctx.ttl_ms / 3000
        try:
            while not ctx.stopping.is_set():
                try:
                    await self.steer_once(member)
                except (RedisError, OSError) as exc:
                    # Unrenewed leases run out by themselves: the shard loops stop committing.
                    log.warning("consumer.steer_failed", consumer=member.name, error=str(exc))
                except Exception:
                    log.exception("consumer.steer_failed", consumer=member.name)
                await ctx.pause(interval)
        finally:
            try:
                await ctx.leases.check_out(ctx.keys.shard_consumers, member.name)
            except (RedisError, OSError):
                pass  # pruned after a lease ttl anyway

    async def steer_once(self, member: Member) -> None:
        ctx = self.ctx
        live = await ctx.leases.check_in(ctx.keys.shard_consumers, member.name, ctx.ttl_ms)
        held = [s for s in member.shards.values() if s.lease.valid()]
        for shard, kept in zip(held, await ctx.leases.renew([s.lease for s in held]), strict=True):
            if not kept:
                log.warning("consumer.shard_lost", consumer=member.name, shard=shard.index)
        share = math.ceil(ctx.shards / live)
        active = sorted((s for s in member.shards.values() if s.active()), key=lambda s: s.index)
        for shard in active[share:]:  # over our share: the loop hands it over after its batch
            shard.releasing = True
        if len(active) >= share or ctx.stopping.is_set():
            return
        # Start at a per-member offset so members racing for free shards rarely collide.
        offset = zlib.crc32(member.name.encode()) % ctx.shards
        for step in range(ctx.shards):
            if len(active) >= share or ctx.stopping.is_set():
                break
            index = (offset + step) % ctx.shards
            if index in member.shards:
                continue  # still winding down from a lost lease or a release
            lease = await ctx.leases.acquire(ctx.keys.shard_lease(index), member.owner, ctx.ttl_ms)
            if lease is None:
                continue
            shard = Shard(index, ctx.keys.heartbeat_shard(index), lease)
            member.shards[index] = shard
            active.append(shard)
            shard.task = asyncio.create_task(self.loop.run(member, shard), name=f"shard-{index}")
            self.shard_tasks.add(shard.task)
            shard.task.add_done_callback(self.shard_tasks.discard)
            log.info("consumer.shard_acquired", consumer=member.name, shard=index)
