"""Group commit: the appends of concurrent requests share ONE Redis pipeline per event-loop turn.

Why: the per-request Redis round trip, not HTTP, is what limits ingest (FIELD-NOTES: ~36k req/s
bare, ~10k with one awaited pipeline per request; the cost is client-side Python per pipeline).
So requests do not talk to Redis themselves. Each one queues its heartbeats and awaits a future;
a flush scheduled with `call_soon` (it runs after every handler that was ready in this loop turn)
takes everything queued and stores it with ONE script call per 1,000 heartbeats, then resolves
each request's future with its own results.

Why a script and not N x XADD in a pipeline: redis-py packs every command in Python (~15 encode
calls per XADD); profiling showed that packing as the largest cost of the whole handler. The
script receives the flush as one orjson-encoded argument and does the XADDs (each to its
workload's shard stream), the last-seen ZADD and the PENDING ZREM inside Redis, which idles at
~10% CPU under full ingest load (FIELD-NOTES). `bench/ingest.py` measures the difference.

Guarantees:
- a request hears "stored" only when the script that carried its entry returned; any failure
  (Redis down, pool exhausted, timeout, OOM, a script error) is reported as not stored
  (the handler answers 503; a retry duplicates at worst, and consumers drop duplicate seqs);
- nothing waits longer than `timeout`: the flush is bounded and so is each request's wait;
- at most `max_inflight` flushes are in flight, so the hot path never needs more than that
  many pooled connections (the pool is shared with the consumers).
- seq and generation travel as strings: Lua numbers are doubles and seq may exceed 2^53.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from collections.abc import Sequence

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from statusd.ingest.streams import shard_streams
from statusd.ingest.validation import Heartbeat
from statusd.keys import Keys

log = structlog.get_logger("statusd.ingest")


class NotStored(Exception):
    """The append did not (provably) reach Redis: answer 503, the client retries."""


class _Job:
    __slots__ = ("heartbeats", "received_ms", "future")

    def __init__(
        self, heartbeats: Sequence[Heartbeat], received_ms: int, future: asyncio.Future[list[bool]]
    ) -> None:
        self.heartbeats = heartbeats
        self.received_ms = received_ms
        self.future = future


# KEYS: the shard streams, then last_seen, then pending_since. ARGV[1]: a JSON array of
# [shard (1-based), workload_id, generation, status, seq, received_at_ms, detail or false];
# ARGV[2]: now (the last-seen score). The field names are the consumers' contract
# (statusd.ingest.reports.parse_entry reads them).
APPEND_SCRIPT = """
local entries = cjson.decode(ARGV[1])
local seen, pending = KEYS[#KEYS - 1], KEYS[#KEYS]
for _, e in ipairs(entries) do
  if e[7] then
    redis.call('XADD', KEYS[e[1]], '*', 'workload_id', e[2], 'generation', e[3], 'status', e[4],
      'seq', e[5], 'received_at', e[6], 'detail', e[7])
  else
    redis.call('XADD', KEYS[e[1]], '*', 'workload_id', e[2], 'generation', e[3], 'status', e[4],
      'seq', e[5], 'received_at', e[6])
  end
  redis.call('ZADD', seen, ARGV[2], e[2])
  redis.call('ZREM', pending, e[2])
end
return #entries
"""
APPEND_SHA = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()
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
    ) -> None:
        self._redis = redis
        self._streams = shard_streams(keys, shards)
        self._shards = shards
        self._last_seen = keys.last_seen
        self._pending_since = keys.pending_since
        self._timeout = timeout
        self._max_inflight = max_inflight
        self._queue: list[_Job] = []
        self._scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()

    async def append(self, heartbeats: Sequence[Heartbeat]) -> list[bool]:
        """Store `heartbeats`; per heartbeat True when its entry is in the stream.

        Raises NotStored when the whole flush failed or did not finish within the timeout.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bool]] = loop.create_future()
        self._queue.append(_Job(heartbeats, int(time.time() * 1000), future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start_flush)
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            raise NotStored(f"redis did not confirm the append within {self._timeout}s") from None

    def _start_flush(self) -> None:
        self._scheduled = False
        if not self._queue or len(self._inflight) >= self._max_inflight:
            return  # a finishing flush reschedules us
        jobs, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._flush(jobs))
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
                results = await self._execute(jobs)
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
        offset = 0
        for job in jobs:
            n = len(job.heartbeats)
            if not job.future.done():
                job.future.set_result(
                    [not isinstance(r, BaseException) for r in results[offset : offset + n]]
                )
            offset += n

    async def _execute(self, jobs: list[_Job]) -> list[object]:
        now = repr(time.time())
        streams, shards, crc32 = self._streams, self._shards, zlib.crc32
        entries: list[tuple[int, str, str, str, str, int, str | bool]] = []
        for job in jobs:
            for hb in job.heartbeats:
                # Inlined streams.shard_of (the hot path): same workload, same shard, always.
                # Lua indexes from 1: KEYS[1..shards] are the shard streams.
                shard = crc32(hb.workload_id.encode()) % shards + 1
                entries.append(
                    (
                        shard,
                        hb.workload_id,
                        str(hb.generation),
                        hb.status,
                        str(hb.seq),
                        job.received_ms,
                        hb.detail if hb.detail is not None else False,
                    )
                )
        keys = [*streams, self._last_seen, self._pending_since]
        async with self._redis.pipeline(transaction=False) as pipe:
            for i in range(0, len(entries), SCRIPT_CHUNK):
                chunk = orjson.dumps(entries[i : i + SCRIPT_CHUNK])
                pipe.execute_command("EVALSHA", APPEND_SHA, len(keys), *keys, chunk, now)
            try:
                await pipe.execute()
            except NoScriptError:  # Redis restarted (or SCRIPT FLUSH): load once, send again
                await self._redis.script_load(APPEND_SCRIPT)
                for i in range(0, len(entries), SCRIPT_CHUNK):
                    chunk = orjson.dumps(entries[i : i + SCRIPT_CHUNK])
                    pipe.execute_command("EVALSHA", APPEND_SHA, len(keys), *keys, chunk, now)
                await pipe.execute()
        return [True] * len(entries)

    async def close(self) -> None:
        """Let in-flight flushes finish (they are bounded by the timeout)."""
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
