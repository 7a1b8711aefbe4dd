"""Group commit: the appends of concurrent requests share ONE Redis pipeline per event-loop turn.

Why: the per-request Redis round trip, not HTTP, is what limits ingest (FIELD-NOTES: ~36k req/s
bare, ~10k with one awaited pipeline per request; the cost is client-side Python per pipeline).
So requests do not talk to Redis themselves. Each one queues its heartbeats and awaits a future;
a flush scheduled with `call_soon` (it runs after every handler that was ready in this loop turn)
takes everything queued, sends one pipeline (N x XADD, each to its workload's shard stream, +
one ZADD of every workload's last-seen time + one ZREM from the PENDING set), and resolves each
request's future with its own results.

Guarantees:
- a request hears "stored" only when the XADD of its own entry returned an id; any failure of
  the pipeline (Redis down, pool exhausted, timeout, a command error) is reported as not stored
  (the handler answers 503; a retry duplicates at worst, and consumers drop duplicate seqs);
- nothing waits longer than `timeout`: the flush is bounded and so is each request's wait;
- at most `max_inflight` pipelines are in flight, so the hot path never needs more than that
  many pooled connections (the pool is shared with the consumers).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence

import structlog
from redis.asyncio import Redis

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


def stream_fields(hb: Heartbeat, received_ms: int) -> dict[str, str | int]:
    """The stream entry of one heartbeat (the consumers' input; also what dead letters keep)."""
    fields: dict[str, str | int] = {
        "workload_id": hb.workload_id,
        "generation": hb.generation,
        "status": hb.status,
        "seq": hb.seq,
        "received_at": received_ms,
    }
    if hb.detail is not None:
        fields["detail"] = hb.detail
    return fields


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
        now = time.time()
        seen: dict[str, float] = {}
        streams, shards, crc32 = self._streams, self._shards, zlib.crc32
        async with self._redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                for hb in job.heartbeats:
                    # Inlined streams.shard_of (the hot path): same workload, same shard, always.
                    stream = streams[crc32(hb.workload_id.encode()) % shards]
                    pipe.xadd(stream, stream_fields(hb, job.received_ms))  # type: ignore[arg-type]
                    seen[hb.workload_id] = now
            # One ZADD/ZREM for the whole flush, not one per heartbeat: liveness for the sweeper.
            pipe.zadd(self._last_seen, seen)
            pipe.zrem(self._pending_since, *seen)
            results: list[object] = await pipe.execute(raise_on_error=False)
        for extra in results[-2:]:
            if isinstance(extra, BaseException):
                raise extra  # liveness not recorded: report not stored, the retry is harmless
        return results[:-2]

    async def close(self) -> None:
        """Let in-flight flushes finish (they are bounded by the timeout)."""
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
