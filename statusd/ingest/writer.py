"""Group commit: the appends of concurrent requests share ONE Redis round trip per event-loop turn.

Why: the per-request Redis round trip, not HTTP, is what limits ingest (~36k req/s
bare, ~10k with one awaited pipeline per request, docs/benchmarks.md; the cost is client-side
Python per pipeline).
So requests do not talk to Redis themselves. Each one queues its heartbeats and awaits a future;
a flush scheduled with `call_soon` (it runs after every handler that was ready in this loop turn)
takes everything queued and stores it with one script call (per 1,000 heartbeats at most;
pipelined), then resolves each request's future. On Redis Cluster a call may touch one hash slot
only, so there the flush sends one call per shard touched instead, in the same pipeline.

Why a script and not N x XADD in a pipeline: redis-py packs every command in Python (~15 encode
calls per XADD); profiling showed that packing as the largest cost of the whole handler. The
script receives the flush as one orjson-encoded argument, grouped by shard, and does the XADDs,
the generation check, the last-seen ZADD and the PENDING ZREM inside Redis, which idles at
~10% CPU under full ingest load. `bench/ingest.py` measures the difference. Every
key carries its shard's hash tag (statusd.keys), so a one-shard call runs on Redis Cluster. On a
single Redis one call carries every shard of the flush: one call per shard cost ~11% of ingest's
CPU in redis-py's packing and reply parsing at 64 concurrent requests (py-spy).

Guarantees:
- a request hears "stored" only when the script that carried its entry returned; any failure
  (Redis down, pool exhausted, timeout, OOM, a script error) is reported as not stored
  (the handler answers 503; a retry duplicates at worst, and consumers drop duplicate seqs);
- no request waits unboundedly: a flush is bounded by `timeout`, and a job still queued past its
  deadline is answered 503 without being sent (so a 503 never covers an entry stored later);
- a flush cut off in flight by the network (answered 503) may still be delivered once the link
  is back: its entries are then duplicates of the client's retry (consumers drop them), and its
  last-seen scores never move a later heartbeat's back (APPEND_SCRIPT);
- at most `max_inflight` flushes are in flight, so the hot path never needs more than that
  many pooled connections (the pool is shared with the consumers);
- with replicas (statusd.ingest.replica_acks), "stored" also means "on enough replicas": the
  flush ends with WAIT on each connection that wrote, and too few acknowledgements is a 503;
- seq and generation travel as strings: Lua numbers are doubles and seq may exceed 2^53.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from typing import Any, cast

import orjson
import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from statusd.errors import StatusdError
from statusd.ingest.heartbeat_checks import CheckedHeartbeat
from statusd.ingest.replica_acks import ReplicaAcks
from statusd.keys import Keys, buckets_per_shard
from statusd.metrics import INGEST_LAST_ACCEPT, REDIS_WAIT_FAILURES
from statusd.redis_runtime import Script

log = structlog.get_logger("statusd.ingest")


class NotStored(StatusdError):
    """The append did not (provably) reach Redis: answer 503, the client retries."""

    transient = True


# One heartbeat as the script reads it (its last item: its registration bucket, replaced by that
# key's KEYS index when the call is built), and one script call: its shards, KEYS and ARGV[1].
_Entry = list[str | int | bool]
_Call = tuple[list[int], list[str], bytes]


class _Job:
    __slots__ = ("heartbeats", "received_ms", "deadline", "future")

    def __init__(
        self,
        heartbeats: Sequence[CheckedHeartbeat],
        received_ms: int,
        deadline: float,
        future: asyncio.Future[None],
    ) -> None:
        self.heartbeats = heartbeats
        self.received_ms = received_ms
        self.deadline = deadline  # loop time after which it is answered 503 instead of sent
        self.future = future


# KEYS: for each shard of the call, its stream, last_seen and pending_since (three keys per shard),
# then the registration buckets (statusd.keys.registration) of the call's entries; all of a
# shard's keys share its hash slot. ARGV[1]: a JSON array with, for each of those shards in order,
# an array of [workload_id, generation, status, seq, received_at_ms, detail or false, KEYS index
# of its registration bucket, its last-seen score or false]; ARGV[2]: now (the last-seen score of
# the others). A heartbeat announcing a quiet period (`quiet_for_s`) brings its own score, now plus
# the quiet period: its deadline moves in the sweeper's index, so nothing is stored for it beyond
# the score every workload has, it survives exactly what that score survives, and the workload's
# next heartbeat ends the quiet period by writing its score again (statusd.staleness counts
# silence from the later of the two). On Redis Cluster each call
# carries one shard, so it touches one slot. The field names are the consumers' contract
# (statusd.ingest.stream_reports.parse_entry). Every entry is appended (the consumer records an old
# generation's report as refused), but only the current generation's heartbeat is a sign of life:
# a deleted registration's container must not keep the new one looking alive. An id without a
# recorded generation (registered before generations were recorded, or Redis lost them before
# statusd.recovery rebuilt them) counts. A registration value is "<generation>|<seq>", then
# possibly "/<cached state>" (statusd.keys.BUCKET_VALUE_LUA).
#
# A flush can reach Redis late: cut off by the network, timed out and answered 503 here, then
# delivered by TCP once the link is back. Its last-seen scores are older than those of the
# heartbeats accepted meanwhile (the client's retry), so a score never moves back over a later
# one, which would make a heartbeating workload look silent since the cut and be declared
# UNREACHABLE. The one score that is lowered is a quiet period's deadline still ahead on Redis's
# clock: the heartbeat that ends the quiet period.
APPEND_SCRIPT = """
local groups = cjson.decode(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local n = 0
for g, entries in ipairs(groups) do
  local base = (g - 1) * 3
  local stream, seen, pending = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3]
  for _, e in ipairs(entries) do
    if e[6] then
      redis.call('XADD', stream, '*', 'workload_id', e[1], 'generation', e[2], 'status', e[3],
        'seq', e[4], 'received_at', e[5], 'detail', e[6])
    else
      redis.call('XADD', stream, '*', 'workload_id', e[1], 'generation', e[2], 'status', e[3],
        'seq', e[4], 'received_at', e[5])
    end
    local registered = redis.call('HGET', KEYS[e[7]], e[1])
    local current = registered and string.match(registered, '^[^|/]*')
    if (not current) or current == '' or current == e[2] then
      local score = e[8] or ARGV[2]
      local old = tonumber(redis.call('ZSCORE', seen, e[1]))
      if (not old) or tonumber(score) >= old or old > now then
        redis.call('ZADD', seen, score, e[1])
      end
      redis.call('ZREM', pending, e[1])
    end
  end
  n = n + #entries
end
return n
"""
SCRIPT_CHUNK = 1000  # heartbeats per script call: bounds how long one call holds Redis


class StreamWriter:
    """Appends heartbeats to the stream with group commit (one pipeline per loop turn)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        shards: int,
        timeout: float,
        max_inflight: int = 2,
        replica_acks: ReplicaAcks | None = None,
    ) -> None:
        self._redis = redis
        self._append = Script(redis, APPEND_SCRIPT)
        self._shards = shards
        # Each shard's script KEYS (one slot): stream, last_seen, pending_since; then its
        # registration buckets, by bucket number.
        self._script_keys = [
            (keys.heartbeat_shard(i), keys.last_seen(i), keys.pending_since(i))
            for i in range(shards)
        ]
        self._buckets = buckets_per_shard(shards)
        self._registration_keys = [
            [keys.registration(i, b) for b in range(self._buckets)] for i in range(shards)
        ]
        self._replica_acks = replica_acks
        self._cluster = isinstance(redis, RedisCluster)
        # WAIT's own timeout: a third of the flush budget, so a slow replica gives a clean 503
        # (with the count) before the flush's timeout cuts the call off, even when a missing
        # script (NOSCRIPT after a Redis restart) makes the flush send everything twice.
        self._wait_ms = max(1, int(timeout * 1000 / 3))
        self._timeout = timeout
        self._max_inflight = max_inflight
        self._queue: list[_Job] = []
        self._scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()

    async def append(self, heartbeats: Sequence[CheckedHeartbeat]) -> None:
        """Return once every one of `heartbeats` is in its stream; raise NotStored otherwise.

        No timer per request (it showed in the profile): a job still queued at its deadline is
        failed when the next flush starts, and a flush is itself bounded by the timeout, so the
        wait is bounded (about two timeouts at most); a queued job answered 503 is never sent.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append(
            _Job(heartbeats, int(time.time() * 1000), loop.time() + self._timeout, future)
        )
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start_flush)
        await future

    def _start_flush(self) -> None:
        self._scheduled = False
        if not self._queue or len(self._inflight) >= self._max_inflight:
            return  # a finishing flush reschedules us
        loop = asyncio.get_running_loop()
        now = loop.time()
        queued, self._queue = self._queue, []
        jobs: list[_Job] = []
        for job in queued:
            if job.future.done():
                continue  # the client went away (handler cancelled): nothing to answer
            if job.deadline <= now:
                job.future.set_exception(
                    NotStored(f"redis did not take the append within {self._timeout}s")
                )
            else:
                jobs.append(job)
        if jobs:
            task = loop.create_task(self._flush(jobs))
            self._inflight.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    async def _flush(self, jobs: list[_Job]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._execute(jobs)
        except Exception as exc:  # every failure is "not stored" (503), never a 500 or a hang
            error = NotStored(f"redis unavailable: {type(exc).__name__}: {exc}")
            log.warning(
                "ingest.flush_failed",
                error=str(error),
                entries=sum(len(j.heartbeats) for j in jobs),
            )
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        # Once per flush, not per request: who watches the watcher reads it (statusd.selfwatch).
        INGEST_LAST_ACCEPT.set(time.time())
        for job in jobs:
            if not job.future.done():
                job.future.set_result(None)

    async def _execute(self, jobs: list[_Job]) -> None:
        wall = time.time()
        now = repr(wall)
        shards, buckets, crc32 = self._shards, self._buckets, zlib.crc32
        by_shard: dict[int, list[_Entry]] = {}
        for job in jobs:
            for hb in job.heartbeats:
                # Inlined keys.bucket_of (the hot path): same workload, same shard, always.
                crc = crc32(hb.workload_id.encode())
                shard = crc % shards
                entry: _Entry = [
                    hb.workload_id,
                    str(hb.generation),
                    hb.status,
                    str(hb.seq),
                    job.received_ms,
                    hb.detail if hb.detail is not None else False,
                    (crc // shards) % buckets,
                    repr(wall + hb.quiet_for_s) if hb.quiet_for_s else False,
                ]
                if (entries := by_shard.get(shard)) is None:
                    by_shard[shard] = [entry]
                else:
                    entries.append(entry)
        calls = self._calls(by_shard)
        try:
            await self._send(calls, now)
        except NoScriptError:  # Redis restarted (or SCRIPT FLUSH): load once, send again
            await self._append.load()
            await self._send(calls, now)

    def _calls(self, by_shard: dict[int, list[_Entry]]) -> list[_Call]:
        """The script calls of one flush: one per shard on a cluster (one slot each), else as few
        as SCRIPT_CHUNK allows; each call's shards are listed, with their entries, in order."""
        calls: list[_Call] = []
        shards: list[int] = []
        groups: list[list[_Entry]] = []
        size = 0
        for shard, entries in by_shard.items():
            for i in range(0, len(entries), SCRIPT_CHUNK):
                part = entries[i : i + SCRIPT_CHUNK]
                if groups and (self._cluster or size + len(part) > SCRIPT_CHUNK):
                    calls.append(self._call(shards, groups))
                    shards, groups, size = [], [], 0
                shards.append(shard)
                groups.append(part)
                size += len(part)
        if groups:
            calls.append(self._call(shards, groups))
        return calls

    def _call(self, shards: list[int], groups: list[list[_Entry]]) -> _Call:
        """One call's KEYS and payload: each entry's bucket number becomes its KEYS index."""
        keys = [key for shard in shards for key in self._script_keys[shard]]
        index: dict[str, int] = {}
        for shard, entries in zip(shards, groups, strict=True):
            bucket_keys = self._registration_keys[shard]
            for entry in entries:
                key = bucket_keys[cast(int, entry[6])]
                if (at := index.get(key)) is None:
                    keys.append(key)
                    at = index[key] = len(keys)  # Lua's KEYS count from 1
                entry[6] = at
        return shards, keys, orjson.dumps(groups)

    async def _send(self, calls: list[_Call], now: str) -> None:
        """One pipeline: the script calls, then, when replicas must acknowledge, one WAIT per
        connection that wrote (per primary node in a cluster)."""
        need = self._replica_acks.required if self._replica_acks is not None else 0
        cluster = self._cluster
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, keys, payload in calls:
                self._append.queue(pipe, keys, (payload, now))
            nodes: dict[str, Any] = {}
            owner: dict[int, str] = {}
            if need and cluster:
                # WAIT has no key: address it to the node each shard's stream lives on; a
                # cluster pipeline sends one node's commands in order on one connection.
                for shards, _, _ in calls:
                    for shard in shards:
                        node = self._node_of(shard)
                        nodes.setdefault(node.name, node)
                        owner[shard] = node.name
                for node in nodes.values():
                    pipe.execute_command("WAIT", need, self._wait_ms, target_nodes=node)
            elif need:
                pipe.execute_command("WAIT", need, self._wait_ms)
            replies = await pipe.execute()
        if not need:
            return
        acks = [int(r) for r in replies[len(calls) :]]
        # A slot that moved mid-flush (failover: the script was redirected) was not covered by
        # the WAIT sent to its old node: unproven, so 503.
        moved = any(self._node_of(shard).name != name for shard, name in owner.items())
        if moved or min(acks, default=0) < need:
            REDIS_WAIT_FAILURES.inc()
            raise NotStored(
                "a shard moved during the flush (failover)"
                if moved
                else f"only {min(acks, default=0)} of {need} required replicas acknowledged"
            )

    def _node_of(self, shard: int) -> Any:
        cluster = cast(RedisCluster, self._redis)
        return cluster.get_node_from_key(self._script_keys[shard][0])

    async def close(self) -> None:
        """Let in-flight flushes finish (bounded by the timeout); answer what is still queued 503."""
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        queued, self._queue = self._queue, []
        for job in queued:
            if not job.future.done():
                job.future.set_exception(NotStored("statusd is shutting down"))
