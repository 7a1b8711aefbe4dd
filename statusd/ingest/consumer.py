"""Stream consumers: apply heartbeats to the lifecycle, exactly once per state change, losing none.

One `ConsumerSet` per process (inside `statusd serve`, or `statusd consume`) runs N consumers in
the consumer group, one reclaimer and one housekeeper. Per batch (XREADGROUP COUNT batch):

1. Parse; per workload keep, in seq order, the newest report of each run of equal states (equal
   seq: the last one). Steady heartbeats collapse to one report per workload; a batch that spans
   a change still applies every change, in seq order.
2. Skip the first report when the Redis state cache says it changes nothing (no SQL: liveness
   lives in Redis); call `apply_observation` for the rest.
3. XACK only after the DB commits (a consumer that dies before acking leaves the entries pending;
   a reclaimer takes them with XAUTOCLAIM, and the seq guard in the DB makes a second apply a
   no-op). The ack pipeline also records each workload's newest seq in `keys.last_seq`.

Failures:
- unknown/deregistered workload, token from an older generation: counted, acked, dropped;
- database or Redis unavailable (transient): nothing is acked and nothing counts as a failed
  delivery; the batch is retried in-process with capped exponential backoff until the store is
  back, and its entries are re-claimed (XCLAIM JUSTID) so no reclaimer steals them meanwhile;
- anything else: that workload's remaining entries stay pending; after `max_deliveries` they go
  to the dead-letter stream with the error (`statusd.ingest.dead_letters`), never blocking others.

Order per workload within a process: reads are serialized and each batch takes a ticket per
workload in read order; a batch applies a workload only after the previous batch holding that
workload is done with it. (Across processes the seq guard keeps state from going backward.)
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import TimeoutError as SATimeoutError

from statusd import metrics
from statusd.db import is_transient_db_error
from statusd.errors import RedisUnavailable, StorageUnavailable, UnknownWorkload
from statusd.ingest import dead_letters
from statusd.lifecycle import Source, State
from statusd.runtime import Runtime
from statusd.state_cache import CachedState
from statusd.transitions import Observation, apply_observation

log = structlog.get_logger("statusd.consumer")

BACKOFF_START_S = 0.1
BACKOFF_CAP_S = 5.0

# Keep the newest seq per workload without going backward when two consumers ack out of order.
_MAX_SEQ = """
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""


class MalformedEntry(Exception):
    """A stream entry whose fields cannot be a heartbeat (written by something other than ingest)."""


@dataclass(frozen=True, slots=True)
class Report:
    entry_id: bytes
    workload_id: str
    generation: int
    status: State
    seq: int
    detail: str | None


def parse_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Report:
    """The heartbeat in a stream entry; MalformedEntry (naming the field) when it is not one."""
    name = "workload_id"
    try:
        workload_id = fields[b"workload_id"].decode()
        name = "generation"
        generation = int(fields[b"generation"])
        name = "status"
        status = State(fields[b"status"].decode())
        name = "seq"
        seq = int(fields[b"seq"])
        name = "detail"
        detail = fields.get(b"detail")
        return Report(
            entry_id,
            workload_id,
            generation,
            status,
            seq,
            detail.decode() if detail is not None else None,
        )
    except KeyError:
        raise MalformedEntry(f"malformed heartbeat entry: field {name!r} is missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEntry(f"malformed heartbeat entry: field {name!r}: {exc}") from None


def collapse(reports: Iterable[Report]) -> dict[str, list[Report]]:
    """Per workload, in seq order, the newest report of each run of equal (state, generation)."""
    by_workload: dict[str, dict[int, Report]] = {}
    for report in reports:  # stream order: for an equal seq the later entry wins
        by_workload.setdefault(report.workload_id, {})[report.seq] = report
    plan: dict[str, list[Report]] = {}
    for workload_id, by_seq in by_workload.items():
        runs: list[Report] = []
        for seq in sorted(by_seq):
            report = by_seq[seq]
            if (
                runs
                and runs[-1].status is report.status
                and runs[-1].generation == report.generation
            ):
                runs[-1] = report
            else:
                runs.append(report)
        plan[workload_id] = runs
    return plan


# PostgreSQL SQLSTATEs that mean "the server will not talk to us right now", not "this row is bad":
# 08 connection exceptions, 57P admin/crash shutdown and cannot-connect-now, 53300 too many
# connections, 55000 on connect when a database has ALLOW_CONNECTIONS false.
_PG_UNAVAILABLE_PREFIXES = ("08", "57P", "53300")


def _pg_unavailable(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None)
    if not isinstance(state, str):
        return False
    if state.startswith(_PG_UNAVAILABLE_PREFIXES):
        return True
    return state == "55000" and "accepting connections" in str(exc)


def is_transient(exc: BaseException) -> bool:
    """The store is unavailable (retry the same batch later), as opposed to this entry is bad.

    Looks through the cause chain: drivers' connect errors may arrive unwrapped or wrapped.
    """
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(
            seen,
            (
                StorageUnavailable,
                RedisUnavailable,
                RedisConnectionError,
                RedisTimeoutError,
                SATimeoutError,
            ),
        ):
            return True
        if is_transient_db_error(seen) or _pg_unavailable(seen):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return False


class WorkloadOrder:
    """Per-workload tickets in read order, so batches of one process apply a workload in order."""

    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Future[None]] = {}

    def take(
        self, workload_ids: Iterable[str]
    ) -> dict[str, tuple[asyncio.Future[None] | None, asyncio.Future[None]]]:
        loop = asyncio.get_running_loop()
        tickets = {}
        for wid in workload_ids:
            mine: asyncio.Future[None] = loop.create_future()
            tickets[wid] = (self._tails.get(wid), mine)
            self._tails[wid] = mine
        return tickets

    def release(self, workload_id: str, mine: asyncio.Future[None]) -> None:
        if not mine.done():
            mine.set_result(None)
        if self._tails.get(workload_id) is mine:
            del self._tails[workload_id]


@dataclass
class _Workload:
    """One workload's share of a batch: its planned reports and all its entry ids (with seqs)."""

    workload_id: str
    reports: list[Report]
    entries: list[tuple[bytes, int]]  # (entry id, seq) of every entry of this workload
    prev: asyncio.Future[None] | None
    ticket: asyncio.Future[None]
    done_upto: int = -1  # index of the last report handled for good
    error: str | None = None  # a non-transient failure: remaining entries stay pending
    transient: bool = False
    handled_seq: int | None = None

    @property
    def finished(self) -> bool:
        return self.error is not None or self.done_upto == len(self.reports) - 1


@dataclass
class _Batch:
    consumer: str
    raw: dict[bytes, dict[bytes, bytes]]  # entry id -> fields
    deliveries: dict[bytes, int]  # entry id -> delivery count (1 for fresh reads)
    workloads: dict[str, _Workload] = field(default_factory=dict)
    malformed: dict[bytes, str] = field(default_factory=dict)


class ConsumerSet:
    """N consumers + a reclaimer + a housekeeper for this process, on one Runtime."""

    def __init__(self, runtime: Runtime, *, count: int, name: str | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.keys = runtime.keys
        self.redis = runtime.redis
        self.count = count
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._stopping = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._order = WorkloadOrder()
        # SQLite has one writer at a time: parallel applies would only fight over the lock.
        slots = 1 if self.settings.is_sqlite else max(1, self.settings.db_pool_size)
        self._db_slots = asyncio.Semaphore(slots)
        self._max_seq = self.redis.register_script(_MAX_SEQ)
        self._tasks: list[asyncio.Task[None]] = []
        self._outcomes = {
            name: metrics.CONSUMER_APPLIED.labels(outcome=name)
            for name in (
                "applied",
                "unchanged",
                "stale_seq",
                "refused",
                "wrong_generation",
                "unknown",
                "skipped",
                "collapsed",
                "dead_letter",
                "failed",
            )
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the consumer, reclaimer and housekeeping tasks on the running loop."""
        for i in range(self.count):
            self._tasks.append(
                asyncio.create_task(self._consume(f"{self.name}:{i}"), name=f"consumer-{i}")
            )
        self._tasks.append(
            asyncio.create_task(self._reclaim(f"{self.name}:reclaim"), name="reclaimer")
        )
        self._tasks.append(asyncio.create_task(self._housekeep(), name="housekeeper"))
        log.info("consumers.started", name=self.name, consumers=self.count)

    async def stop(self, grace: float = 10.0) -> None:
        """Finish the batches in hand (up to `grace` seconds), then cancel and await the rest."""
        self._stopping.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        log.info("consumers.stopped", name=self.name)

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing; from id 0 so nothing is skipped."""
        try:
            await self.redis.xgroup_create(
                self.keys.heartbeats, self.keys.consumer_group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- reading -----------------------------------------------------------------------------
    async def _consume(self, consumer: str) -> None:
        backoff = BACKOFF_START_S
        start_id = (
            "0"  # first our own pending entries (a restart under the same --name), then new ones
        )
        while not self._stopping.is_set():
            try:
                async with self._read_lock:
                    if self._stopping.is_set():
                        break
                    reply: Any = await self.redis.xreadgroup(
                        self.keys.consumer_group,
                        consumer,
                        {self.keys.heartbeats: start_id},
                        count=self.settings.consumer_batch,
                        block=self.settings.consumer_block_ms if start_id == ">" else None,
                    )
                    entries = reply[0][1] if reply else []
                    if start_id == "0" and not entries:
                        start_id = ">"
                        continue
                    batch = self._prepare(consumer, entries, {})
                backoff = BACKOFF_START_S
                if batch is not None:
                    await self._process(batch)
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # stream or group gone (Redis lost its data): recreate
                    log.warning("consumer.no_group", consumer=consumer)
                    await self._guarded(self.ensure_group())
                    continue
                log.error("consumer.read_failed", consumer=consumer, error=str(exc))
                await self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
            except (RedisError, OSError) as exc:
                log.warning(
                    "consumer.redis_unavailable",
                    consumer=consumer,
                    error=str(exc),
                    retry_in=backoff,
                )
                await self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
            except Exception:  # a bug must not kill the consumer silently; its entries stay pending
                log.exception("consumer.failed", consumer=consumer)
                await self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)

    async def _guarded(self, awaitable: object) -> None:
        try:
            await awaitable  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            log.warning("consumer.redis_unavailable", error=str(exc))
            await self._pause(BACKOFF_START_S)

    def _prepare(
        self,
        consumer: str,
        entries: list[tuple[bytes, dict[bytes, bytes]]],
        deliveries: dict[bytes, int],
    ) -> _Batch | None:
        """Parse and plan a batch and take its per-workload tickets (call under the read lock)."""
        live = [
            (eid, fields) for eid, fields in entries if fields
        ]  # XAUTOCLAIM: deleted entries have None
        if not live:
            return None
        batch = _Batch(consumer, dict(live), deliveries)
        reports: list[Report] = []
        for entry_id, fields in live:
            try:
                reports.append(parse_entry(entry_id, fields))
            except MalformedEntry as exc:
                batch.malformed[entry_id] = str(exc)
        plan = collapse(reports)
        entries_of: dict[str, list[tuple[bytes, int]]] = {}
        for report in reports:
            entries_of.setdefault(report.workload_id, []).append((report.entry_id, report.seq))
        tickets = self._order.take(plan)
        for wid, planned in plan.items():
            prev, mine = tickets[wid]
            batch.workloads[wid] = _Workload(wid, planned, entries_of[wid], prev, mine)
        self._outcomes["collapsed"].inc(len(reports) - sum(len(p) for p in plan.values()))
        return batch

    # -- applying ----------------------------------------------------------------------------
    async def _process(self, batch: _Batch) -> None:
        """Apply a batch (retrying transient failures in-process), then ack what was handled."""
        try:
            backoff = BACKOFF_START_S
            while True:
                todo = [w for w in batch.workloads.values() if not w.finished]
                if not todo:
                    break
                try:  # re-read on every retry: another process may have moved these workloads
                    cached = await self.runtime.cache.get_many(w.workload_id for w in todo)
                except (RedisError, OSError) as exc:
                    log.warning("consumer.cache_unavailable", error=str(exc))
                    transient = True
                else:
                    for w in todo:
                        w.transient = False
                    await asyncio.gather(
                        *(self._apply_workload(w, cached.get(w.workload_id)) for w in todo)
                    )
                    transient = any(w.transient for w in todo)
                if not transient:
                    break
                if self._stopping.is_set():
                    break  # ack what is done; the rest stays pending for a reclaimer (or our restart)
                await self._touch(batch)
                log.warning("consumer.store_unavailable", retry_in=backoff, workloads=len(todo))
                await self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
            if self.settings.consumer_pause_before_ack_s and not self._stopping.is_set():
                log.warning(
                    "consumer.pausing_before_ack", seconds=self.settings.consumer_pause_before_ack_s
                )
                await asyncio.sleep(self.settings.consumer_pause_before_ack_s)
        finally:
            for w in batch.workloads.values():
                self._order.release(w.workload_id, w.ticket)
        await self._settle(batch)

    async def _apply_workload(self, w: _Workload, cached: CachedState | None) -> None:
        if w.prev is not None and not w.prev.done():
            await asyncio.shield(w.prev)
        try:
            for index in range(w.done_upto + 1, len(w.reports)):
                report = w.reports[index]
                if (
                    index == 0
                    and cached is not None
                    and cached.makes_no_change(report.status.value, report.generation)
                ):
                    self._outcomes["skipped"].inc()
                else:
                    outcome = await self._apply(report)
                    self._outcomes[outcome].inc()
                w.done_upto = index
                w.handled_seq = report.seq
        except Exception as exc:
            if is_transient(exc):
                w.transient = True
                return
            w.error = f"{type(exc).__name__}: {exc}"
            self._outcomes["failed"].inc()
            log.error("consumer.apply_failed", workload_id=w.workload_id, error=w.error)
        finally:
            if w.finished:
                self._order.release(w.workload_id, w.ticket)

    async def _apply(self, report: Report) -> str:
        observation = Observation(
            report.workload_id,
            report.status,
            Source.PUSH,
            seq=report.seq,
            reason=report.detail,
            actor="heartbeat",
            generation=report.generation,
        )
        async with self._db_slots:
            try:
                result = await apply_observation(self.runtime.ledger, observation)
            except UnknownWorkload:
                return (
                    "unknown"  # counted and dropped: a deleted workload's container still talking
                )
        return result.outcome.value

    async def _touch(self, batch: _Batch) -> None:
        """Reset the idle time of our pending entries so reclaimers leave a stalled batch alone."""
        ids = [eid for w in batch.workloads.values() if not w.finished for eid, _ in w.entries]
        if not ids:
            return
        try:
            await self.redis.xclaim(
                self.keys.heartbeats,
                self.keys.consumer_group,
                batch.consumer,
                0,
                list[Any](ids),
                justid=True,
            )
        except (RedisError, OSError):
            pass  # Redis is down too: nobody can claim them either

    async def _settle(self, batch: _Batch) -> None:
        """Ack handled entries (+ newest seq per workload); bury entries out of deliveries."""
        ack: list[bytes] = []
        newest: dict[str, int] = {}
        failed: dict[bytes, str] = dict(batch.malformed)
        for w in batch.workloads.values():
            if w.handled_seq is not None:
                newest[w.workload_id] = max(seq for _, seq in w.entries if seq <= w.handled_seq)
            for entry_id, seq in w.entries:
                if w.handled_seq is not None and seq <= w.handled_seq:
                    ack.append(entry_id)  # handled, or superseded by a handled newer report
                elif w.error is not None:
                    failed[entry_id] = w.error
        await self._ack(ack, newest)
        for entry_id, error in failed.items():
            deliveries = batch.deliveries.get(entry_id, 1)
            if deliveries >= self.settings.max_deliveries:
                await self._bury(entry_id, batch.raw[entry_id], error, deliveries)

    async def _ack(self, ack: list[bytes], newest: dict[str, int]) -> None:
        backoff = BACKOFF_START_S
        while ack or newest:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    if ack:
                        pipe.xack(self.keys.heartbeats, self.keys.consumer_group, *ack)
                    if newest:
                        args: list[str | int] = [
                            x for wid, seq in newest.items() for x in (wid, seq)
                        ]
                        await self._max_seq(
                            keys=[self.keys.last_seq], args=args, client=pipe
                        )  # queues only
                    await pipe.execute()
                break
            except (RedisError, OSError) as exc:
                # Committed but not acked: retrying is safe (a redelivery is a seq no-op), giving up
                # is too (the entries stay pending and get reclaimed). Give up only when stopping.
                if self._stopping.is_set():
                    return
                log.warning("consumer.ack_failed", error=str(exc), retry_in=backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)

    async def _bury(
        self, entry_id: bytes, fields: dict[bytes, bytes], error: str, deliveries: int
    ) -> None:
        try:
            await dead_letters.bury(self.redis, self.keys, entry_id, fields, error, deliveries)
        except (RedisError, OSError) as exc:
            log.warning("consumer.bury_failed", entry_id=entry_id.decode(), error=str(exc))
            return  # still pending: the reclaimer tries again
        self._outcomes["dead_letter"].inc()
        log.error(
            "consumer.dead_letter", entry_id=entry_id.decode(), error=error, deliveries=deliveries
        )

    # -- reclaiming --------------------------------------------------------------------------
    async def _reclaim(self, consumer: str) -> None:
        """Take entries idle longer than claim_min_idle_ms (their consumer died) and apply them."""
        interval = min(self.settings.claim_min_idle_ms / 2000, 5.0)
        while not self._stopping.is_set():
            await self._pause(interval)
            try:
                await self._reclaim_once(consumer)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("reclaimer.redis_unavailable", error=str(exc))
            except Exception:
                log.exception("reclaimer.failed")

    async def _reclaim_once(self, consumer: str) -> int:
        cursor: bytes | str = "0-0"
        claimed_total = 0
        while not self._stopping.is_set():
            async with self._read_lock:
                reply: Any = await self.redis.xautoclaim(
                    self.keys.heartbeats,
                    self.keys.consumer_group,
                    consumer,
                    min_idle_time=self.settings.claim_min_idle_ms,
                    start_id=cursor,
                    count=self.settings.consumer_batch,
                )
                cursor, entries = reply[0], [e for e in reply[1] if e[1]]
                deliveries = await self._deliveries(consumer, [eid for eid, _ in entries])
                too_many = [
                    (eid, fields)
                    for eid, fields in entries
                    if deliveries.get(eid, 1) > self.settings.max_deliveries
                ]
                batch = self._prepare(
                    consumer, [e for e in entries if e not in too_many], deliveries
                )
            for entry_id, fields in too_many:  # its consumers kept dying on it: never try again
                await self._bury(
                    entry_id,
                    fields,
                    "delivered without an ack too often (consumers died?)",
                    deliveries[entry_id],
                )
            if batch is not None:
                claimed_total += len(batch.raw)
                log.info("reclaimer.claimed", entries=len(batch.raw))
                await self._process(batch)
            if cursor in (b"0-0", "0-0"):
                break
        return claimed_total

    async def _deliveries(self, consumer: str, ids: list[bytes]) -> dict[bytes, int]:
        if not ids:
            return {}
        rows = await self.redis.xpending_range(
            self.keys.heartbeats,
            self.keys.consumer_group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) + 100,
            consumername=consumer,
        )
        wanted = set(ids)
        return {
            row["message_id"]: int(row["times_delivered"])
            for row in rows
            if row["message_id"] in wanted
        }

    # -- housekeeping ------------------------------------------------------------------------
    async def _housekeep(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.housekeep_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("housekeeping.redis_unavailable", error=str(exc))
            except Exception:
                log.exception("housekeeping.failed")
            await self._pause(self.settings.consumer_housekeeping_s)

    async def housekeep_once(self) -> int:
        """Update the stream gauges and trim what every consumer is done with; returns trimmed count.

        Never MAXLEN (it would drop unapplied entries): trim below min(oldest pending id, the
        group's last-delivered id). Both only move forward, so a threshold read a moment ago is
        still safe when XTRIM runs.
        """
        stream, group = self.keys.heartbeats, self.keys.consumer_group
        groups = await self.redis.xinfo_groups(stream)
        info = next((g for g in groups if _text(g["name"]) == group), None)
        if info is None:
            return 0
        metrics.STREAM_LENGTH.set(await self.redis.xlen(stream))
        metrics.STREAM_PENDING.set(int(info["pending"]))
        if info.get("lag") is not None:
            metrics.STREAM_LAG.set(int(info["lag"]))
        threshold = _text(info["last-delivered-id"])
        if threshold in ("0-0", ""):
            return 0
        if int(info["pending"]):
            summary = await self.redis.xpending(stream, group)
            oldest = summary.get("min")
            if oldest is not None:
                threshold = min(threshold, _text(oldest), key=_id_key)
        return int(await self.redis.xtrim(stream, minid=threshold, approximate=True))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
