"""Every Redis key, stream and consumer-group name statusd uses, built in one place.

All of them start with `Settings.redis_prefix`, so tests (and two statusd installs sharing one
Redis) never see each other's keys.

Layout (Redis Cluster ready, the same on a single Redis): every per-workload key lives under its
stream shard's hash tag, `<prefix>{s7}:hb`, `<prefix>{s7}:seen`, `<prefix>{s7}:reg:<bucket>`...,
so the ingest script, the consumers' ack pipeline and a registration's MULTI each touch ONE slot
(Redis Cluster refuses a script or MULTI across slots). Process-wide keys (leases, locks,
self-watch) share the global tag `<prefix>{g}:`. Readers of the liveness sets go shard by shard.

Per-workload hash fields are spread over small bucket hashes (`bucket_of`), not one key per
workload nor one big hash per shard: a small hash is stored as a listpack (no per-field pointers
and allocations), which is what keeps Redis under 300 B per tracked workload (docs/benchmarks.md).
A workload's registration and its cached state share ONE field: a bucket key costs ~150 B
(keyspace entry, name, listpack header), and with fewer workloads than buckets nearly every
workload has a bucket of its own, so a second family of buckets would double that share.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

# STATUSD_STREAM_SHARDS' default (settings.py reads it from here): Keys() without a shard count
# (tests, tools) then names the same keys as a default-configured process.
DEFAULT_STREAM_SHARDS = 16
GLOBAL_TAG = "{g}"


def shard_of(workload_id: str, shards: int) -> int:
    """The stream shard of a workload: stable across processes and restarts (crc32, not hash()).
    Here, beside the keys, because per-shard keys (streams, generations) are named by it."""
    return zlib.crc32(workload_id.encode()) % shards


# Bucket hashes per install, spread evenly over the shards (256 per shard at the default 16).
# Redis keeps a hash as a compact listpack while it has <= 128 fields (`hash-max-listpack-entries`)
# of <= 64 bytes each; past that it converts it, for good, to a hashtable (~3x the bytes per field).
# 200,000 workloads over 4,096 buckets is 49 fields per bucket on average (crc32 spreads them like
# Poisson: sd 7, so the fullest of 4,096 buckets holds ~75, far from 128); 20,000 workloads is ~5
# per bucket, where each bucket key's own overhead (~100 B: keyspace entry, key name, listpack
# header) costs ~20 B per workload per family. Half as many buckets would put the fullest ones
# over 128 at 200k; twice as many would double that per-key share at 20k.
BUCKETS = 4096

# The two parts of a registration bucket's value, "<registration>/<cache entry>", for every script
# that reads or writes either (statusd.liveness, statusd.state_cache, the ingest script reads the
# generation up to the first "|" or "/"). Either part may be empty ('' when absent); a field with
# both parts empty is deleted. Neither part contains "/": registration parts are numbers, and a
# cache entry is numbers, state names, kind codes and refused states. A listpack keeps values of
# <= 64 bytes, and a client's seq is 19 digits (nanoseconds): the cache entry's seq (its sixth
# part) is stored as "=" when it equals the registration's, as it nearly always does, and
# `split_value` gives it back. Every writer goes through `split_value` and `put_value`, so a "="
# never outlives the registration seq it stands for.
BUCKET_VALUE_LUA = """
local CACHE_SEQ = '^([^|]*|[^|]*|[^|]*|[^|]*|[^|]*|)([^|]*)(.*)$'
local function split_value(value)
  if not value then return '', '' end
  local reg, cache = string.match(value, '^([^/]*)/?(.*)$')
  if cache ~= '' then
    local head, seq, tail = string.match(cache, CACHE_SEQ)
    if seq == '=' then cache = head .. (string.match(reg, '|(.*)$') or '') .. tail end
  end
  return reg, cache
end
local function put_value(key, id, reg, cache, old)
  local value = reg
  if cache ~= '' then
    local head, seq, tail = string.match(cache, CACHE_SEQ)
    if head and seq ~= '' and seq == string.match(reg, '|(.*)$') then
      cache = head .. '=' .. tail
    end
    value = reg .. '/' .. cache
  end
  if value == '' then
    if old then redis.call('HDEL', key, id) end
  elseif value ~= old then
    redis.call('HSET', key, id, value)
  end
end
"""


def split_value(value: bytes | str | None) -> tuple[str, str]:
    """(registration part, cache part) of a registration bucket's value, '' for an absent part."""
    if value is None:
        return "", ""
    text = value.decode() if isinstance(value, bytes) else value
    reg, _, cache = text.partition("/")
    return reg, cache


def buckets_per_shard(shards: int) -> int:
    """How many bucket hashes each shard has (BUCKETS spread over the shards, at least one)."""
    return max(1, BUCKETS // shards)


def bucket_of(workload_id: str, shards: int) -> tuple[int, int]:
    """(shard, bucket within the shard) of a workload's hash fields: from the same crc32 as its
    shard (the shard takes `crc % shards`, the bucket the quotient), so a bucket key carries its
    shard's hash tag and every bucket of a shard is one slot."""
    crc = zlib.crc32(workload_id.encode())
    return crc % shards, (crc // shards) % buckets_per_shard(shards)


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "statusd:"
    shards: int = DEFAULT_STREAM_SHARDS

    def shard(self, workload_id: str) -> int:
        """`shard_of` with this layout's shard count."""
        return shard_of(workload_id, self.shards)

    def bucket(self, workload_id: str) -> tuple[int, int]:
        """`bucket_of` with this layout's shard count."""
        return bucket_of(workload_id, self.shards)

    @property
    def buckets(self) -> int:
        """Bucket hashes per shard."""
        return buckets_per_shard(self.shards)

    def by_shard(self, workload_ids: Iterable[str]) -> dict[int, list[str]]:
        """Ids grouped by shard (each group's keys share one slot), in first-seen order."""
        out: dict[int, list[str]] = {}
        for wid in workload_ids:
            out.setdefault(shard_of(wid, self.shards), []).append(wid)
        return out

    def _s(self, shard: int) -> str:
        return f"{self.prefix}{{s{shard}}}:"

    @property
    def _g(self) -> str:
        return f"{self.prefix}{GLOBAL_TAG}:"

    # -- push path --
    def heartbeat_shard(self, shard: int) -> str:
        """Stream of accepted heartbeats of one shard (workloads hashed over STATUSD_STREAM_SHARDS)."""
        return f"{self._s(shard)}hb"

    @property
    def consumer_group(self) -> str:
        """The consumer group, same name on every shard stream."""
        return f"{self.prefix}appliers"

    def shard_lease(self, shard: int) -> str:
        """String with TTL: the consumer that alone applies this shard now."""
        return f"{self._s(shard)}lease"

    @property
    def shard_consumers(self) -> str:
        """Sorted set: live consumer name -> last sign of life (ms); sizes each one's share."""
        return f"{self._g}consumers"

    @property
    def dead_letters(self) -> str:
        """Stream of heartbeat entries that kept failing, with the error; replayable."""
        return f"{self._g}hb:dead"

    def last_seen(self, shard: int) -> str:
        """Sorted set, one per shard: workload id -> last sign of life (unix seconds). The
        sweeper reads them."""
        return f"{self._s(shard)}seen"

    def registration(self, shard: int, bucket: int) -> str:
        """Hash, one per bucket (`bucket_of`): workload id -> "<generation>|<newest seq>", either
        part possibly empty (statusd.liveness encodes and reads it), then, when its state is
        cached, "/" and the cache entry (statusd.state_cache): see `BUCKET_VALUE_LUA`. Ingest's
        script reads the generation, so an older generation's heartbeat is no sign of life;
        consumers and polls raise the seq (observed, applied or not), never backward."""
        return f"{self._s(shard)}reg:{bucket}"

    def registration_of(self, workload_id: str) -> str:
        """`registration` of the bucket `workload_id` falls in."""
        return self.registration(*self.bucket(workload_id))

    @property
    def liveness_built(self) -> str:
        """String: unix seconds of the last liveness rebuild from the database. Its absence means
        Redis lost its data (statusd.recovery rebuilds then). The name carries the layout's
        version: a future layout names a new marker, so an install holding this one rebuilds."""
        return f"{self._g}liveness:built:v3"

    @property
    def state_cache_server(self) -> str:
        """String: the identity (run_id) of the Redis server the state cache was filled on. Another
        server, or this one restarted, may have lost the cache's last writes: the consumers then
        drop every entry (statusd.state_cache.StateCache.forget_if_restarted)."""
        return f"{self._g}cache:server"

    # -- pull path --
    def pending_since(self, shard: int) -> str:
        """Sorted set, one per shard: PENDING workload id -> registration time (start timeout)."""
        return f"{self._s(shard)}pending"

    def poll_lease(self, workload_id: str) -> str:
        """String with TTL: whoever holds it is polling this workload now."""
        return f"{self._g}lease:poll:{workload_id}"

    def poll_queue(self, sweep_token: str) -> str:
        """List with TTL: the ids one sweep leased, for poll tasks with free slots to take
        (statusd.sweeper.poll_leases.take_queued); an id in it may already be polled by its own task."""
        return f"{self._g}queue:poll:{sweep_token}"

    def poll_claimed_elsewhere(self, sweep_token: str) -> str:
        """Set with TTL: the ids of one sweep that a task other than their chunk's own took, so
        that task does not retake them once their lease was released after the poll."""
        return f"{self._g}taken:poll:{sweep_token}"

    def poll_run_ids(self, run_token: str) -> str:
        """Set with TTL: the ids one poll task run took from its sweep's queue, so a redelivery
        of that task (its worker was killed) polls them again too."""
        return f"{self._g}took:poll:{run_token}"

    @property
    def sweep_lock(self) -> str:
        return f"{self._g}lock:sweep"

    @property
    def beat_leader(self) -> str:
        """String with TTL: the name of the one beat that sends scheduled tasks now."""
        return f"{self._g}lock:beat"

    # -- self-watch (statusd.selfwatch): statusd's own health, read by /readyz, /metrics, the page --
    @property
    def sweep_last_success(self) -> str:
        """String: unix seconds at which the last sweep finished without error."""
        return f"{self._g}sweep:last_success"

    @property
    def ingest_listening(self) -> str:
        """Sorted set: ingest process id -> unix seconds of its last "I am accepting" beat (~1/s)."""
        return f"{self._g}ingest:listening"

    @property
    def ingest_outages(self) -> str:
        """Sorted set: "<last beat>|<next beat>" scored by the last beat: each span during which no
        ingest process was listening (statusd.hearing writes it; statusd.availability copies it
        into the database, where reports read it)."""
        return f"{self._g}ingest:outages"

    @property
    def ingest_listening_since(self) -> str:
        """String: unix seconds since which some ingest process has been accepting without a gap
        (statusd.hearing); silence before it plus the startup grace proves nothing."""
        return f"{self._g}ingest:listening_since"

    @property
    def disruption(self) -> str:
        """Hash: disruption mode (active 0/1, since, stale, tracked), written by the sweeper."""
        return f"{self._g}disruption"

    # -- status-page sessions (statusd.api.sessions) --
    def session(self, session_id: str) -> str:
        """String with TTL: a live status-page session; deleting it revokes the cookie (logout)."""
        return f"{self.prefix}session:{session_id}"

    # -- sync / events --
    @property
    def sync_kick(self) -> str:
        """Debounce key for the prompt outbox drain after a new transition."""
        return f"{self._g}sync:kick"

    @property
    def events_channel(self) -> str:
        """Pub/sub channel: a transition was committed (wake-up only; the DB is the truth)."""
        return f"{self.prefix}events"
