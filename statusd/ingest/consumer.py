"""Stream consumers: apply heartbeats to the lifecycle, every state change once and in seq order.

Why shards and leases: with one stream read by consumers in several processes, two consumers could
each hold reports of the same workload; if seq 6 committed before seq 5, seq 5 was (rightly) stale
and its transition never appeared in history. So the stream is split by workload into shards
(statusd.ingest.streams) and each shard is applied by ONE consumer at a time, holding a lease
(statusd.ingest.leases), strictly in stream order: one sequential loop per held shard.

One `ConsumerSet` per process (inside `statusd serve`, or `statusd consume`) runs N consumers.
Each consumer checks in every lease-ttl/3, renews its leases, and aims for ceil(shards / live
consumers) of them: it acquires free shards up to that and releases extras after their in-flight
batch, so a newly started process gets its share within a few seconds.

Per held shard:
1. On acquiring it, take over its pending entries first (XAUTOCLAIM, min-idle 0: safe, because the
   previous holder stopped committing at its fencing deadline, before our lease could exist), and
   apply them before reading new ones (XREADGROUP ">").
2. Per batch: collapse per workload (statusd.ingest.reports), skip the first report when the Redis
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
import math
import os
import socket
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisError, ResponseError

from statusd.errors import StatusdError, UnknownWorkload, is_transient
from statusd.ingest import dead_letters
from statusd.ingest.leases import Lease, LeaseBook
from statusd.ingest.outcomes import NOT_COUNTED, ConsumeOutcome, outcome_counters
from statusd.ingest.reports import MalformedEntry, Report, collapse, parse_entry
from statusd.ingest.streams import ensure_groups, text
from statusd.lifecycle import Source
from statusd.liveness import newest_seq_recorder
from statusd.runtime import Runtime
from statusd.state_cache import CachedState
from statusd.transitions import Observation, apply_observation

log = structlog.get_logger("statusd.consumer")

BACKOFF_START_S = 0.1
BACKOFF_CAP_S = 5.0
POISON_RETRY_S = 0.05  # between in-process retries of a failing (non-transient) entry


class LeaseLost(StatusdError):
    """The shard's lease expired or was taken: commit nothing more for it."""


@dataclass
class _Workload:
    """One workload's share of a batch: its planned reports and all its entry ids (with seqs)."""

    workload_id: str
    reports: list[Report]
    entries: list[tuple[bytes, int]]  # (entry id, seq) of every entry of this workload
    attempts: int = 0  # failed (non-transient) attempts, earlier deliveries included
    done_upto: int = -1  # index of the last report handled for good
    error: str | None = None  # gave up: its unhandled entries go to the dead letters
    retry: bool = False  # failed, not yet max_deliveries times
    transient: bool = False
    fenced: bool = False  # the lease ran out before its next apply
    handled_seq: int | None = None  # newest report handled (its entries and older can be acked)
    # Newest seq that counts as this registration's (recorded as the workload's last_seq): an
    # older generation's or a deregistered workload's report is acked but is no sign of life.
    counted_seq: int | None = None

    @property
    def finished(self) -> bool:
        return self.error is not None or self.done_upto == len(self.reports) - 1


@dataclass
class _Batch:
    raw: dict[bytes, dict[bytes, bytes]]  # entry id -> fields
    deliveries: dict[bytes, int]  # entry id -> delivery count (1 for fresh reads)
    workloads: dict[str, _Workload] = field(default_factory=dict)
    malformed: dict[bytes, str] = field(default_factory=dict)


@dataclass(eq=False)
class _Shard:
    """A shard held by one consumer: its lease and the loop that applies it."""

    index: int
    stream: str
    lease: Lease
    releasing: bool = False  # over our share: hand it over after the batch in hand
    sweep_at: float | None = None  # next take-over pass (None: the first, before any read)
    task: asyncio.Task[None] | None = None

    def active(self) -> bool:
        return not self.releasing and self.lease.valid()


@dataclass(eq=False)
class _Consumer:
    """One member of the consumer group: its name in the group and the shards it holds."""

    name: str
    owner: str  # lease value: name + incarnation, so a restart under the same --name is not us
    shards: dict[int, _Shard] = field(default_factory=dict)


class ConsumerSet:
    """N shard-leasing consumers + a housekeeper for this process, on one Runtime."""

    def __init__(self, runtime: Runtime, *, count: int, name: str | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.keys = runtime.keys
        self.redis = runtime.redis
        self.shards = self.settings.stream_shards
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        incarnation = uuid.uuid4().hex[:8]
        self._consumers = [
            _Consumer(f"{self.name}:{i}", f"{self.name}:{i}/{incarnation}") for i in range(count)
        ]
        self._ttl_ms = self.settings.shard_lease_ms
        # A blocking read must come back well inside the fencing margin (ttl/3): entries delivered
        # to us then are pending under our name before the lease can pass to anyone else.
        self._block_ms = max(1, min(self.settings.consumer_block_ms, self._ttl_ms // 6))
        self._leases = LeaseBook(self.redis)
        self._stopping = asyncio.Event()
        # Blocking reads hold a pooled connection each: leave room for ingest and applies.
        self._reads = asyncio.Semaphore(max(1, self.settings.redis_max_connections // 2))
        # SQLite has one writer at a time: parallel applies would only fight over the lock.
        slots = 1 if self.settings.is_sqlite else max(1, self.settings.db_pool_size)
        self._db_slots = asyncio.Semaphore(slots)
        self._max_seq = newest_seq_recorder(self.redis)  # a replayed dead letter is older
        self._tasks: list[asyncio.Task[None]] = []
        self._shard_tasks: set[asyncio.Task[None]] = set()
        self._outcomes = outcome_counters()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start each consumer's steering loop and the housekeeper on the running loop."""
        for consumer in self._consumers:
            self._tasks.append(
                asyncio.create_task(self._steer(consumer), name=f"steer-{consumer.name}")
            )
        self._tasks.append(asyncio.create_task(self._housekeep(), name="housekeeper"))
        log.info(
            "consumers.started", name=self.name, consumers=len(self._consumers), shards=self.shards
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Finish the batches in hand (up to `grace` seconds), release the leases, then return."""
        self._stopping.set()
        deadline = asyncio.get_running_loop().time() + grace
        # Steering first: once it is done no shard can be acquired, so the shard loops awaited
        # next are all of them (none would be left to release its lease after the pools close).
        await _finish(self._tasks, grace)
        await _finish(
            list(self._shard_tasks), max(0.0, deadline - asyncio.get_running_loop().time())
        )
        self._tasks.clear()
        log.info("consumers.stopped", name=self.name)

    def owned(self) -> dict[int, str]:
        """Shard -> consumer name, for the shards whose apply loop runs here (a fenced shard's loop
        may still be winding down, committing nothing; once it is gone from here, it is gone)."""
        return {
            shard.index: consumer.name
            for consumer in self._consumers
            for shard in consumer.shards.values()
        }

    async def ensure_groups(self) -> None:
        """Create the consumer group on every shard stream (from id 0, so nothing is skipped)."""
        await ensure_groups(self.redis, self.keys, self.shards)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    # -- steering: check in, renew, balance ----------------------------------------------------
    async def _steer(self, consumer: _Consumer) -> None:
        interval = self._ttl_ms / 3000
        try:
            while not self._stopping.is_set():
                try:
                    await self._steer_once(consumer)
                except (RedisError, OSError) as exc:
                    # Unrenewed leases run out by themselves: the shard loops stop committing.
                    log.warning("consumer.steer_failed", consumer=consumer.name, error=str(exc))
                except Exception:
                    log.exception("consumer.steer_failed", consumer=consumer.name)
                await self._pause(interval)
        finally:
            try:
                await self._leases.check_out(self.keys.shard_consumers, consumer.name)
            except (RedisError, OSError):
                pass  # pruned after a lease ttl anyway

    async def _steer_once(self, consumer: _Consumer) -> None:
        live = await self._leases.check_in(self.keys.shard_consumers, consumer.name, self._ttl_ms)
        held = [s for s in consumer.shards.values() if s.lease.valid()]
        for shard, kept in zip(
            held, await self._leases.renew([s.lease for s in held]), strict=True
        ):
            if not kept:
                log.warning("consumer.shard_lost", consumer=consumer.name, shard=shard.index)
        share = math.ceil(self.shards / live)
        active = sorted((s for s in consumer.shards.values() if s.active()), key=lambda s: s.index)
        for shard in active[share:]:  # over our share: the loop hands it over after its batch
            shard.releasing = True
        if len(active) >= share or self._stopping.is_set():
            return
        # Start at a per-consumer offset so consumers racing for free shards rarely collide.
        offset = zlib.crc32(consumer.name.encode()) % self.shards
        for step in range(self.shards):
            if len(active) >= share or self._stopping.is_set():
                break
            index = (offset + step) % self.shards
            if index in consumer.shards:
                continue  # still winding down from a lost lease or a release
            lease = await self._leases.acquire(
                self.keys.shard_lease(index), consumer.owner, self._ttl_ms
            )
            if lease is None:
                continue
            shard = _Shard(index, self.keys.heartbeat_shard(index), lease)
            consumer.shards[index] = shard
            active.append(shard)
            shard.task = asyncio.create_task(
                self._run_shard(consumer, shard), name=f"shard-{index}"
            )
            self._shard_tasks.add(shard.task)
            shard.task.add_done_callback(self._shard_tasks.discard)
            log.info("consumer.shard_acquired", consumer=consumer.name, shard=index)

    # -- one held shard ------------------------------------------------------------------------
    async def _run_shard(self, consumer: _Consumer, shard: _Shard) -> None:
        """Apply one shard strictly in stream order while its lease holds."""
        backoff = BACKOFF_START_S
        try:
            while not self._stopping.is_set() and shard.active():
                try:
                    await self._shard_step(consumer, shard)
                    backoff = BACKOFF_START_S
                    continue
                except LeaseLost:
                    break
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):  # stream or group gone (Redis lost its data)
                        log.warning("consumer.no_group", shard=shard.index)
                        await self._guarded(self.ensure_groups())
                        continue
                    log.error("consumer.read_failed", shard=shard.index, error=str(exc))
                except (RedisError, OSError) as exc:
                    log.warning("consumer.redis_unavailable", shard=shard.index, error=str(exc))
                except Exception:  # a bug must not kill the loop silently; entries stay pending
                    log.exception("consumer.failed", shard=shard.index)
                await self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
        finally:
            await self._leave(consumer, shard)

    async def _shard_step(self, consumer: _Consumer, shard: _Shard) -> None:
        """One turn of a shard's loop: a take-over pass when due, else one read and its batch."""
        if shard.sweep_at is None or time.monotonic() >= shard.sweep_at:
            # First the previous holder's pending entries, all of them, in order, before anything
            # new. Later, once per lease ttl, a sweep for entries that a holder who lost its lease
            # early (stolen, Redis lost the key) read after we took over: nothing stays pending
            # forever, even where order could not be kept.
            first = shard.sweep_at is None
            await self._take_over(consumer, shard, 0 if first else self._ttl_ms)
            shard.sweep_at = time.monotonic() + self._ttl_ms / 1000
            return
        async with self._reads:
            if not shard.active():
                return
            reply: Any = await self.redis.xreadgroup(
                self.keys.consumer_group,
                consumer.name,
                {shard.stream: ">"},
                count=self.settings.consumer_batch,
                block=self._block_ms,
            )
        batch = self._prepare(reply[0][1] if reply else [], {})
        if batch is not None:
            await self._process(shard, batch)

    async def _leave(self, consumer: _Consumer, shard: _Shard) -> None:
        consumer.shards.pop(shard.index, None)
        if shard.lease.valid():  # a release or a clean stop: hand it over at once
            try:
                await self._leases.release(shard.lease)
                log.info("consumer.shard_released", consumer=consumer.name, shard=shard.index)
            except (RedisError, OSError):
                shard.lease.lose()  # it expires by itself
        else:
            log.info("consumer.shard_left", consumer=consumer.name, shard=shard.index)

    async def _guarded(self, awaitable: Any) -> None:
        try:
            await awaitable
        except (RedisError, OSError) as exc:
            log.warning("consumer.redis_unavailable", error=str(exc))
            await self._pause(BACKOFF_START_S)

    async def _take_over(self, consumer: _Consumer, shard: _Shard, min_idle_ms: int) -> None:
        """Claim the shard's pending entries idle >= min_idle_ms, oldest first, and apply them."""
        cursor: bytes | str = "0-0"
        while not self._stopping.is_set() and shard.active():
            reply: Any = await self.redis.xautoclaim(
                shard.stream,
                self.keys.consumer_group,
                consumer.name,
                min_idle_time=min_idle_ms,
                start_id=cursor,
                count=self.settings.consumer_batch,
            )
            cursor, entries = reply[0], [e for e in reply[1] if e[1]]
            if entries:
                log.info("consumer.took_over", shard=shard.index, entries=len(entries))
                deliveries = await self._deliveries(
                    shard, consumer.name, [eid for eid, _ in entries]
                )
                batch = self._prepare(entries, deliveries)
                if batch is not None:
                    await self._process(shard, batch)
            if cursor in (b"0-0", "0-0"):
                return

    async def _deliveries(self, shard: _Shard, consumer: str, ids: list[bytes]) -> dict[bytes, int]:
        rows = await self.redis.xpending_range(
            shard.stream,
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

    def _prepare(
        self,
        entries: list[tuple[bytes, dict[bytes, bytes]]],
        deliveries: dict[bytes, int],
    ) -> _Batch | None:
        """Parse a batch and plan each workload's reports."""
        if not entries:
            return None
        batch = _Batch(dict(entries), deliveries)
        reports: list[Report] = []
        for entry_id, fields in entries:
            try:
                reports.append(parse_entry(entry_id, fields))
            except MalformedEntry as exc:
                batch.malformed[entry_id] = str(exc)
        entries_of: dict[str, list[tuple[bytes, int]]] = {}
        for report in reports:
            entries_of.setdefault(report.workload_id, []).append((report.entry_id, report.seq))
        plan = collapse(reports)
        for wid, planned in plan.items():
            mine = entries_of[wid]
            # Deliveries before this one that ended without an ack count as failed attempts
            # (a consumer that kept dying on this entry): a crash loop ends in the dead letters.
            earlier = max(deliveries.get(eid, 1) for eid, _ in mine) - 1
            batch.workloads[wid] = _Workload(wid, planned, mine, attempts=earlier)
        self._outcomes[ConsumeOutcome.COLLAPSED].inc(
            len(reports) - sum(len(p) for p in plan.values())
        )
        return batch

    # -- applying ----------------------------------------------------------------------------
    async def _process(self, shard: _Shard, batch: _Batch) -> None:
        """Apply a batch (retrying in-process), then ack what was handled; LeaseLost if fenced."""
        backoff = BACKOFF_START_S
        while True:
            todo = [w for w in batch.workloads.values() if not w.finished]
            if not todo:
                break
            try:  # re-read on every retry: the state may have moved meanwhile
                cached = await self.runtime.cache.get_many(w.workload_id for w in todo)
            except (RedisError, OSError) as exc:
                log.warning("consumer.cache_unavailable", error=str(exc))
                transient, retry = True, False
            else:
                for w in todo:
                    w.transient = w.retry = w.fenced = False
                await asyncio.gather(
                    *(self._apply_workload(shard, w, cached.get(w.workload_id)) for w in todo)
                )
                transient = any(w.transient for w in todo)
                retry = any(w.retry for w in todo)
                if any(w.fenced for w in todo):
                    break
            if not (transient or retry) or self._stopping.is_set() or not shard.lease.valid():
                break  # stopping/fenced: ack what is done, the rest stays pending for the next holder
            if transient:
                log.warning(
                    "consumer.store_unavailable",
                    shard=shard.index,
                    retry_in=backoff,
                    workloads=len(todo),
                )
                await self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
            else:
                await self._pause(POISON_RETRY_S)
        pause = self.settings.consumer_pause_before_ack_s
        if pause and not self._stopping.is_set():
            log.warning("consumer.pausing_before_ack", seconds=pause)
            await asyncio.sleep(pause)
        await self._settle(shard, batch)
        if not shard.lease.valid():
            raise LeaseLost(f"shard {shard.index}")

    async def _apply_workload(
        self, shard: _Shard, w: _Workload, cached: CachedState | None
    ) -> None:
        try:
            for index in range(w.done_upto + 1, len(w.reports)):
                report = w.reports[index]
                if (
                    index == 0
                    and cached is not None
                    and cached.makes_no_change(report.status.value, report.generation, report.seq)
                ):
                    self._outcomes[ConsumeOutcome.SKIPPED].inc()
                    w.counted_seq = report.seq
                else:
                    outcome = await self._apply(shard, report)
                    self._outcomes[outcome].inc()
                    if outcome not in NOT_COUNTED:
                        w.counted_seq = report.seq
                w.done_upto = index
                w.handled_seq = report.seq
        except LeaseLost:
            w.fenced = True
        except Exception as exc:
            if is_transient(exc):
                w.transient = True
                return
            w.attempts += 1
            error = f"{type(exc).__name__}: {exc}"
            if w.attempts < self.settings.max_deliveries:
                w.retry = True
                log.warning("consumer.apply_failed", workload_id=w.workload_id, error=error)
                return
            w.error = error
            self._outcomes[ConsumeOutcome.FAILED].inc()
            log.error("consumer.apply_failed", workload_id=w.workload_id, error=w.error)

    async def _apply(self, shard: _Shard, report: Report) -> ConsumeOutcome:
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
            # Fencing: checked after waiting for a slot, right before the transaction.
            if not shard.lease.valid():
                raise LeaseLost(f"shard {shard.index}")
            try:
                result = await apply_observation(self.runtime.ledger, observation)
            except UnknownWorkload:
                return ConsumeOutcome.UNKNOWN  # a deleted workload's container talking
        return ConsumeOutcome(result.outcome.value)

    async def _settle(self, shard: _Shard, batch: _Batch) -> None:
        """Ack handled entries (+ newest seq per workload); bury the ones that keep failing."""
        ack: list[bytes] = []
        newest: dict[str, int] = {}
        generations: dict[str, int] = {}
        failed: dict[bytes, tuple[str, int]] = {
            eid: (error, batch.deliveries.get(eid, 1)) for eid, error in batch.malformed.items()
        }
        for w in batch.workloads.values():
            if w.counted_seq is not None:
                newest[w.workload_id] = w.counted_seq
                generations[w.workload_id] = next(
                    r.generation for r in w.reports if r.seq == w.counted_seq
                )
            for entry_id, seq in w.entries:
                if w.handled_seq is not None and seq <= w.handled_seq:
                    ack.append(entry_id)  # handled, or superseded by a handled newer report
                elif w.error is not None:
                    failed[entry_id] = (w.error, w.attempts)
        await self._ack(shard, ack, newest, generations)
        if not shard.lease.valid():
            return  # burying is the holder's decision; the next holder retries them
        for entry_id, (error, deliveries) in failed.items():
            await self._bury(shard, entry_id, batch.raw[entry_id], error, deliveries)

    async def _ack(
        self, shard: _Shard, ack: list[bytes], newest: dict[str, int], generations: dict[str, int]
    ) -> None:
        backoff = BACKOFF_START_S
        while ack or newest:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    if ack:
                        pipe.xack(shard.stream, self.keys.consumer_group, *ack)
                    if newest:
                        args: list[str | int] = [
                            x for wid, seq in newest.items() for x in (wid, seq)
                        ]
                        await self._max_seq(keys=[self.keys.last_seq], args=args, client=pipe)
                        # Skipped reports never reach the DB: the cache keeps their seq instead.
                        await self.runtime.cache.bump_seqs(
                            {
                                w: (generations[w], seq)
                                for w, seq in newest.items()
                                if w in generations
                            },
                            client=pipe,
                        )
                    await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                # Committed but not acked: retrying is safe (a redelivery is a seq no-op), giving
                # up is too (the entries stay pending and the next holder takes them over).
                if self._stopping.is_set() or not shard.lease.valid():
                    return
                log.warning("consumer.ack_failed", error=str(exc), retry_in=backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)

    async def _bury(
        self,
        shard: _Shard,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        error: str,
        deliveries: int,
    ) -> None:
        try:
            await dead_letters.bury(
                self.redis, self.keys, shard.stream, entry_id, fields, error, deliveries
            )
        except (RedisError, OSError) as exc:
            log.warning("consumer.bury_failed", entry_id=entry_id.decode(), error=str(exc))
            return  # still pending: taken over (and retried) by the next holder
        self._outcomes[ConsumeOutcome.DEAD_LETTER].inc()
        log.error(
            "consumer.dead_letter", entry_id=entry_id.decode(), error=error, deliveries=deliveries
        )

    # -- housekeeping ------------------------------------------------------------------------
    async def _housekeep(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.housekeep_once()
            except (RedisError, OSError) as exc:
                log.warning("housekeeping.redis_unavailable", error=str(exc))
            except Exception:
                log.exception("housekeeping.failed")
            await self._pause(self.settings.consumer_housekeeping_s)

    async def housekeep_once(self) -> int:
        """Trim the shards held here; returns the trimmed count. (The stream's length and lag are
        computed at scrape time by the API process: statusd.oncall.fleet_collector.)"""
        trimmed = 0
        for shard in [s for c in self._consumers for s in c.shards.values() if s.active()]:
            trimmed += await self._trim(shard.stream)
        return trimmed

    async def _trim(self, stream: str) -> int:
        """Never MAXLEN (it would drop unapplied entries): trim below min(oldest pending id, the
        group's last-delivered id). Both only move forward, so a threshold read a moment ago is
        still safe when XTRIM runs."""
        group = self.keys.consumer_group
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:  # no such key yet
            return 0
        info = next((g for g in groups if text(g["name"]) == group), None)
        if info is None:
            return 0
        threshold = text(info["last-delivered-id"])
        if threshold in ("0-0", ""):
            return 0
        if int(info["pending"]):
            summary = await self.redis.xpending(stream, group)
            oldest = summary.get("min")
            if oldest is not None:
                threshold = min(threshold, text(oldest), key=_id_key)
        return int(await self.redis.xtrim(stream, minid=threshold, approximate=True))


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def _finish(tasks: list[asyncio.Task[None]], grace: float) -> None:
    """Wait up to `grace` seconds for `tasks`, then cancel what is left and wait for that too."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
