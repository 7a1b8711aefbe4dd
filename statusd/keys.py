"""Every Redis key, stream and consumer-group name statusd uses, built in one place.

All of them start with `Settings.redis_prefix`, so tests (and two statusd installs sharing one
Redis) never see each other's keys.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


def shard_of(workload_id: str, shards: int) -> int:
    """The stream shard of a workload: stable across processes and restarts (crc32, not hash()).
    Here, beside the keys, because per-shard keys (streams, generations) are named by it."""
    return zlib.crc32(workload_id.encode()) % shards


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "statusd:"

    # -- push path --
    def heartbeat_shard(self, shard: int) -> str:
        """Stream of accepted heartbeats of one shard (workloads hashed over STATUSD_STREAM_SHARDS)."""
        return f"{self.prefix}hb:{shard}"

    @property
    def consumer_group(self) -> str:
        """The consumer group, same name on every shard stream."""
        return f"{self.prefix}appliers"

    def shard_lease(self, shard: int) -> str:
        """String with TTL: the consumer that alone applies this shard now."""
        return f"{self.prefix}lease:shard:{shard}"

    @property
    def shard_consumers(self) -> str:
        """Sorted set: live consumer name -> last sign of life (ms); sizes each one's share."""
        return f"{self.prefix}consumers"

    @property
    def dead_letters(self) -> str:
        """Stream of heartbeat entries that kept failing, with the error; replayable."""
        return f"{self.prefix}hb:dead"

    @property
    def last_seen(self) -> str:
        """Sorted set: workload id -> last sign of life (unix seconds). The sweeper reads it."""
        return f"{self.prefix}seen"

    @property
    def last_seq(self) -> str:
        """Hash: workload id -> newest seq observed (applied or not)."""
        return f"{self.prefix}seq"

    def generations(self, shard: int) -> str:
        """Hash, one per stream shard: workload id -> current registration generation. Ingest's
        script reads it so an older generation's heartbeat is no sign of life (per shard, so one
        script call stays within one shard's data once keys are hash-tagged for Redis Cluster)."""
        return f"{self.prefix}gen:{shard}"

    @property
    def liveness_built(self) -> str:
        """String: unix seconds of the last liveness rebuild from the database. Its absence means
        Redis lost its data (statusd.recovery rebuilds then)."""
        return f"{self.prefix}liveness:built"

    def state(self, workload_id: str) -> str:
        """Hash: cached current state of a workload (state, version, generation, refused:*)."""
        return f"{self.prefix}state:{workload_id}"

    # -- pull path --
    @property
    def pending_since(self) -> str:
        """Sorted set: PENDING workload id -> registration time (start-timeout tracking)."""
        return f"{self.prefix}pending"

    def poll_lease(self, workload_id: str) -> str:
        """String with TTL: whoever holds it is polling this workload now."""
        return f"{self.prefix}lease:poll:{workload_id}"

    @property
    def sweep_lock(self) -> str:
        return f"{self.prefix}lock:sweep"

    @property
    def beat_leader(self) -> str:
        """String with TTL: the name of the one beat that sends scheduled tasks now."""
        return f"{self.prefix}lock:beat"

    # -- self-watch (statusd.selfwatch): statusd's own health, read by /readyz, /metrics, the page --
    @property
    def sweep_last_success(self) -> str:
        """String: unix seconds at which the last sweep finished without error."""
        return f"{self.prefix}sweep:last_success"

    @property
    def ingest_listening(self) -> str:
        """Sorted set: ingest process id -> unix seconds of its last "I am accepting" beat (~1/s)."""
        return f"{self.prefix}ingest:listening"

    @property
    def ingest_listening_since(self) -> str:
        """String: unix seconds since which some ingest process has been accepting without a gap
        (statusd.hearing); silence before it plus the startup grace proves nothing."""
        return f"{self.prefix}ingest:listening_since"

    @property
    def disruption(self) -> str:
        """Hash: disruption mode (active 0/1, since, stale, tracked), written by the sweeper."""
        return f"{self.prefix}disruption"

    # -- status-page sessions (statusd.api.sessions) --
    def session(self, session_id: str) -> str:
        """String with TTL: a live status-page session; deleting it revokes the cookie (logout)."""
        return f"{self.prefix}session:{session_id}"

    # -- sync / events --
    @property
    def sync_kick(self) -> str:
        """Debounce key for the prompt outbox drain after a new transition."""
        return f"{self.prefix}sync:kick"

    @property
    def events_channel(self) -> str:
        """Pub/sub channel: a transition was committed (wake-up only; the DB is the truth)."""
        return f"{self.prefix}events"
