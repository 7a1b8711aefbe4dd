"""How many replicas a group-commit flush waits for (WAIT) before ingest answers 202.

A 202 must survive a failover: an entry only the primary had is lost when a replica is promoted
in its place. So when the primary has replicas, every flush ends with `WAIT <n> <ms>` on the
connection that wrote it, and fewer acknowledgements than `n` is a 503 (the client retries; a
heartbeat is idempotent by seq). `n` is STATUSD_REDIS_MIN_REPLICA_ACKS, or, unset, 1 while the
primary has replicas (INFO replication `connected_slaves`, the fewest over a cluster's
primaries) and 0 without, re-read every REFRESH_S so a replica attached later is waited for.
"""

from __future__ import annotations

import structlog
from redis.asyncio import Redis

from statusd.redis_runtime import connected_replicas
from statusd.repeating import Repeating

log = structlog.get_logger("statusd.ingest")

REFRESH_S = 5.0


class ReplicaAcks:
    """The number of replica acknowledgements each flush requires now (`required`)."""

    def __init__(self, redis: Redis, configured: int | None) -> None:
        self._redis = redis
        self._configured = configured
        self.required = configured or 0
        self._repeating = Repeating(
            self.refresh,
            REFRESH_S,
            name="ingest-replica-acks",
            log=log,
            failed_event="ingest.replica_check_failed",  # the last answer is kept meanwhile
        )

    async def refresh(self) -> None:
        if self._configured is not None:
            return
        required = 1 if await connected_replicas(self._redis) > 0 else 0
        if required != self.required:
            log.info("ingest.replica_acks", required=required)
        self.required = required

    def start(self) -> None:
        if self._configured is None:
            self._repeating.start()

    async def stop(self) -> None:
        await self._repeating.stop()
