"""Stream consumers: apply heartbeats to the lifecycle, every state change once and in seq order.

Why shards and leases: with one stream read by consumers in several processes, two consumers could
each hold reports of the same workload; if seq 6 committed before seq 5, seq 5 was (rightly) stale
and its transition never appeared in history. So the stream is split by workload into shards
(statusd.ingest.streams) and each shard is applied by ONE consumer at a time, holding a lease
(statusd.ingest.leases), strictly in stream order: one sequential loop per held shard.

One `ConsumerSet` per process (inside `statusd serve`, or `statusd consume`) runs N consumers.
The parts, one module each: balancing (statusd.ingest.balancing), the shard loop (shard_loop),
batch planning (batch_plan), apply/retry/poison (apply_batch), settle/ack (settle),
housekeeping (housekeeping); what they share is statusd.ingest.consumer_context.
Each consumer checks in every lease-ttl/3, renews its leases, and aims for ceil(shards / live
consumers) of them: it acquires free shards up to that and releases extras after their in-flight
batch, so a newly started process gets its share within a few seconds.

Per held shard:
1. Each read claims the shard's pending entries first (XAUTOCLAIM, min-idle 0: safe, because an
   earlier holder stopped committing at its fencing deadline, before our lease could exist), then
   reads new ones (XREADGROUP ">"), in one round trip: what a dead holder left, or a delivery
   nobody saw (a reply lost to a partition), is applied before anything newer. The same round
   trip reads the lease key: a holder that finds the shard handed on leaves it at once.
2. Per batch: collapse per workload (statusd.ingest.stream_reports), skip the first report when the Redis
   state cache says it changes nothing (steady heartbeats write no SQL), `apply_observation` for
   the rest; the lease is checked before every apply (fencing), so a holder that lost it commits
   nothing more and leaves its entries pending for the next holder.
3. XACK only after the DB commit; the ack pipeline also records each workload's newest seq.

Failures:
- unknown/deregistered workload, token from an older generation: counted, acked, dropped;
- database or Redis unavailable (transient): nothing is acked, nothing counts as a failed
  delivery; the same batch is retried with capped backoff while the lease is kept renewed;
- anything else (poison): that workload's entries are retried `max_deliveries` times, then go to
  the dead-letter stream with the error (unreadable entries at once); the shard flows on.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import structlog
from redis.exceptions import RedisError

from statusd.ingest.apply_batch import BatchApplier
from statusd.ingest.balancing import Balancer, StartupRound
from statusd.ingest.consumer_context import ConsumerContext, Member
from statusd.ingest.housekeeping import trim_stream
from statusd.ingest.settle import Settler
from statusd.ingest.shard_loop import ShardLoop
from statusd.ingest.streams import ensure_groups
from statusd.runtime import Runtime
from statusd.state_cache import RESTARTED

log = structlog.get_logger("statusd.consumer")


class ConsumerSet:
    """N shard-leasing consumers + a housekeeper for this process, on one Runtime."""

    def __init__(self, runtime: Runtime, *, count: int, name: str | None = None) -> None:
        self.runtime = runtime
        self._ctx = ctx = ConsumerContext(runtime)
        self.settings = ctx.settings
        self.keys = ctx.keys
        self.redis = ctx.redis
        self.shards = ctx.shards
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        incarnation = uuid.uuid4().hex[:8]
        self._members = [
            Member(f"{self.name}:{i}", f"{self.name}:{i}/{incarnation}") for i in range(count)
        ]
        self._balancer = Balancer(ctx, ShardLoop(ctx, BatchApplier(ctx, Settler(ctx))))
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start each consumer's steering loop and the housekeeper on the running loop."""
        startup = StartupRound(len(self._members), self.shards)
        for member in self._members:
            self._tasks.append(
                asyncio.create_task(
                    self._balancer.steer(member, startup), name=f"steer-{member.name}"
                )
            )
        self._tasks.append(asyncio.create_task(self._housekeep(), name="housekeeper"))
        log.info(
            "consumers.started", name=self.name, consumers=len(self._members), shards=self.shards
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Finish the batches in hand (up to `grace` seconds), release the leases, then return."""
        self._ctx.stopping.set()
        deadline = asyncio.get_running_loop().time() + grace
        # Steering first: once it is done no shard can be acquired, so the shard loops awaited
        # next are all of them (none would be left to release its lease after the pools close).
        await _finish(self._tasks, grace)
        await _finish(
            list(self._balancer.shard_tasks),
            max(0.0, deadline - asyncio.get_running_loop().time()),
        )
        self._tasks.clear()
        log.info("consumers.stopped", name=self.name)

    def owned(self) -> dict[int, str]:
        """Shard -> consumer name, for the shards whose apply loop runs here (a fenced shard's loop
        may still be winding down, committing nothing; once it is gone from here, it is gone)."""
        return {
            shard.index: member.name for member in self._members for shard in member.shards.values()
        }

    async def ensure_groups(self) -> None:
        """Create the consumer group on every shard stream (from id 0, so nothing is skipped).

        With Redis away (a process restarted during a Redis outage) this logs and returns: each
        shard loop creates its group when a read answers NOGROUP, once Redis is back.
        """
        try:
            await ensure_groups(self.redis, self.keys, self.shards)
        except (RedisError, OSError) as exc:
            log.warning("consumers.group_not_created", error=str(exc), then="created on first read")

    async def _housekeep(self) -> None:
        while not self._ctx.stopping.is_set():
            try:
                await self.housekeep_once()
            except (RedisError, OSError) as exc:
                log.warning("housekeeping.redis_unavailable", error=str(exc))
            except Exception:
                log.exception("housekeeping.failed")
            await self._ctx.pause(self.settings.consumer_housekeeping_s)

    async def housekeep_once(self) -> int:
        """Drop the state cache after a Redis restart, trim the shards held here and prune a few
        of their state-cache buckets' expired entries; returns the trimmed count. (The stream's length and lag are computed at scrape
        time by the API process: statusd.oncall.fleet_collector.)"""
        if await self._ctx.runtime.cache.forget_if_restarted():
            log.warning("consumer.cache_dropped", reason=RESTARTED)
        trimmed = 0
        for shard in [s for m in self._members for s in m.shards.values() if s.active()]:
            trimmed += await trim_stream(self.redis, self.keys.consumer_group, shard.stream)
            # Here, not in the writers: a bucket no transition writes again (its workloads all
            # finished) would keep its expired entries forever; each shard has one holder, so
            # every bucket is visited once per round, a bounded few per pass.
            await self._ctx.runtime.cache.prune(shard.index)
        return trimmed


async def _finish(tasks: list[asyncio.Task[None]], grace: float) -> None:
    """Wait up to `grace` seconds for `tasks`, then cancel what is left and wait for that too."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
