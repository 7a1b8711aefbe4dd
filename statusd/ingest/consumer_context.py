"""What the parts of a ConsumerSet share: the runtime, the stop signal and the bounds.

Balancing, the shard loops, applying and settling each live in their own module
(statusd.ingest.consumer tells the whole story); they meet here instead of in one class."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from prometheus_client import Counter
from redis.asyncio import Redis

from statusd.ingest.leases import LeaseBook, ShardLease
from statusd.ingest.outcomes import ConsumeOutcome, outcome_counters
from statusd.keys import Keys
from statusd.runtime import Runtime
from statusd.settings import Settings

BACKOFF_START_S = 0.1
BACKOFF_CAP_S = 5.0


class ConsumerContext:
    """One per ConsumerSet: shared by every consumer, shard loop and batch of this process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings: Settings = runtime.settings
        self.keys: Keys = runtime.keys
        self.redis: Redis = runtime.redis
        self.shards = self.settings.stream_shards
        self.ttl_ms = self.settings.shard_lease_ms
        # A blocking read must come back well inside the fencing margin (ttl/3): entries delivered
        # to us then are pending under our name before the lease can pass to anyone else.
        self.block_ms = max(1, min(self.settings.consumer_block_ms, self.ttl_ms // 6))
        # The same bound for the wait between small batches (statusd.ingest.shard_loop).
        self.linger_s = min(self.settings.consumer_linger_ms, self.ttl_ms // 6) / 1000
        self.leases = LeaseBook(self.redis)
        self.stopping = asyncio.Event()
        # Blocking reads hold a pooled connection each: leave room for ingest and applies.
        self.reads = asyncio.Semaphore(max(1, self.settings.redis_max_connections // 2))
        # SQLite has one writer at a time: parallel applies would only fight over the lock.
        slots = 1 if self.settings.is_sqlite else max(1, self.settings.db_pool_size)
        self.db_slots = asyncio.Semaphore(slots)
        self.outcomes: dict[ConsumeOutcome, Counter] = outcome_counters()

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass


@dataclass(eq=False)
class Shard:
    """A shard held by one consumer: its lease and the loop that applies it."""

    index: int
    stream: str
    lease: ShardLease
    releasing: bool = False  # over our share: hand it over after the batch in hand
    task: asyncio.Task[None] | None = None

    def active(self) -> bool:
        return not self.releasing and self.lease.valid()


@dataclass(eq=False)
class Member:
    """One member of the consumer group: its name in the group and the shards it holds."""

    name: str
    owner: str  # lease value: name + incarnation, so a restart under the same --name is not us
    shards: dict[int, Shard] = field(default_factory=dict)
