"""Balancing: each consumer checks in, renews its leases and holds its fair share of shards.

Every lease-ttl/3 a member checks in (a set of live consumers with a ttl), renews what it holds,
and aims for ceil(shards / live consumers): it acquires free shards up to that (starting at a
per-member offset, so members racing for free shards rarely collide) and marks the extras for
release after their in-flight batch, so a newly started process gets its share within seconds.

At start every member of the process checks in before any acquires, so the first round already
splits the shards between them (no member grabs all and hands half over seconds later), and what
that round took is one log line, `consumers.took_shards`; acquisitions, losses and hand-overs
after it are one line each.
"""

from __future__ import annotations

import asyncio
import math
import zlib

import structlog
from redis.exceptions import RedisError

from statusd.ingest.consumer_context import ConsumerContext, Member, Shard
from statusd.ingest.leases import ServerTooYoung
from statusd.ingest.shard_loop import ShardLoop

log = structlog.get_logger("statusd.consumer")


def shard_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (a log line that stays short with many shards)."""
    parts: list[str] = []
    for index in sorted(indices):
        if parts and index == int(parts[-1].rsplit("-", 1)[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{index}"
        else:
            parts.append(str(index))
    return ",".join(parts) or "none"


class StartupRound:
    """The first round of a process's members: all check in, then each acquires its share;
    what they took is logged once, when the last one has reported."""

    def __init__(self, members: int, shards: int) -> None:
        self.members = members
        self.shards = shards
        self.everyone_in = asyncio.Event()
        self.taken: dict[str, list[int]] = {}
        self._arrived = 0

    def arrive(self) -> None:
        self._arrived += 1
        if self._arrived >= self.members:
            self.everyone_in.set()

    def report(self, member: str, acquired: list[int]) -> None:
        self.taken[member] = acquired
        if len(self.taken) == self.members:
            log.info(
                "consumers.took_shards",
                taken=sum(len(held) for held in self.taken.values()),
                shards=self.shards,
                held={name: shard_ranges(held) for name, held in sorted(self.taken.items())},
            )


class Balancer:
    """Steers the members of one ConsumerSet; starts a ShardLoop task per acquired shard."""

    def __init__(self, ctx: ConsumerContext, loop: ShardLoop) -> None:
        self.ctx = ctx
        self.loop = loop
        self.shard_tasks: set[asyncio.Task[None]] = set()

    async def steer(self, member: Member, startup: StartupRound) -> None:
        """Check in, renew and balance every ttl/3 until stopping; then check out."""
        ctx = self.ctx
        interval = ctx.ttl_ms / 3000
        first = True
        try:
            await self._check_in_with_the_others(member, startup)
            while not ctx.stopping.is_set():
                acquired: list[int] = []
                try:
                    acquired = await self.steer_once(member, quiet=first)
                except (RedisError, OSError) as exc:
                    # Unrenewed leases run out by themselves: the shard loops stop committing.
                    log.warning("consumer.steer_failed", consumer=member.name, error=str(exc))
                except Exception:
                    log.exception("consumer.steer_failed", consumer=member.name)
                if first:
                    startup.report(member.name, acquired)
                    first = False
                await ctx.pause(interval)
        finally:
            try:
                await ctx.leases.check_out(ctx.keys.shard_consumers, member.name)
            except (RedisError, OSError):
                pass  # pruned after a lease ttl anyway

    async def _check_in_with_the_others(self, member: Member, startup: StartupRound) -> None:
        """Be counted as live before any member of this process takes its share."""
        try:
            await self.ctx.leases.check_in(
                self.ctx.keys.shard_consumers, member.name, self.ctx.ttl_ms
            )
        except (RedisError, OSError):
            pass  # the first round retries it, and says so
        finally:
            startup.arrive()
        await startup.everyone_in.wait()

    async def steer_once(self, member: Member, *, quiet: bool = False) -> list[int]:
        """One round; returns the shards acquired (each logged unless `quiet`: the first round's
        are summed up in one line by StartupRound)."""
        ctx = self.ctx
        acquired: list[int] = []
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
            return acquired
        # Start at a per-member offset so members racing for free shards rarely collide.
        offset = zlib.crc32(member.name.encode()) % ctx.shards
        for step in range(ctx.shards):
            if len(active) >= share or ctx.stopping.is_set():
                break
            index = (offset + step) % ctx.shards
            if index in member.shards:
                continue  # still winding down from a lost lease or a release
            try:
                lease = await ctx.leases.acquire(
                    ctx.keys.shard_lease(index), member.owner, ctx.ttl_ms
                )
            except ServerTooYoung:
                # Any free shard would be refused the same way this round; say so once.
                log.info("consumer.redis_restarted_wait", consumer=member.name, ttl_ms=ctx.ttl_ms)
                break
            if lease is None:
                continue
            shard = Shard(index, ctx.keys.heartbeat_shard(index), lease)
            member.shards[index] = shard
            active.append(shard)
            shard.task = asyncio.create_task(self.loop.run(member, shard), name=f"shard-{index}")
            self.shard_tasks.add(shard.task)
            shard.task.add_done_callback(self.shard_tasks.discard)
            acquired.append(index)
            if not quiet:
                log.info("consumer.shard_acquired", consumer=member.name, shard=index)
        return acquired
