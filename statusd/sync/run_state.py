"""The bookkeeping of one drain run: rows claimed ahead, sends in flight, results to write, leases.

statusd.sync.drain drives it; this module only says which row goes where, so the rules (claim in
batches, claim ahead at most one batch, renew what is held, give back what will not be sent) read
in one place. Every row the run holds, from its claim until its result is written, has a RowLease
(statusd.sync.lease) here; the sends read it before each attempt.

Rows are sent by the run's lanes, one long-lived coroutine per send slot of the ceiling: a lane
takes the next ready row and makes its first attempt itself, so a healthy row costs no task of its
own and no wake-up of the run's loop. A row that needs more (a retry's backoff, a send slot not
free) is handed off to a task of its own and the lane goes on with the next row: a row sleeping
before its retry never idles a lane.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

from statusd.sync.lease import RENEW_AFTER, RowLease
from statusd.sync.outbox import ClaimedRow, RowOutcome, SendResult


@dataclass
class DrainReport:
    """What one drain run did (returned by the Celery tasks and `statusd sync drain`)."""

    claimed: int = 0
    delivered: int = 0
    dead: int = 0
    deferred: int = 0  # gave up for this run: attempts and next_attempt_at recorded
    lease_lost: int = 0  # the result could not be recorded under our lease (expired, DB down)
    released: int = 0  # claimed but not sent (deadline, row limit, no time left in its lease)
    stopped_early: bool = False  # deadline or row limit reached with work possibly left

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Rows in their send per send slot: a failing row backs off for hundreds of milliseconds while
# a healthy request takes a few, so this many keep the slots busy through a 20% failure rate.
ROWS_PER_SLOT = 8

# Results are written in batches of at least this many per send slot (a write is four round trips
# to the database whatever its size), or once the oldest has waited WRITE_WAIT, or at once when no
# more are coming (no row ready or in its send). A result that waits is a row still leased to us,
# renewed like any held row; a worker killed meanwhile has its rows re-sent (a duplicate the
# peer recognizes), as for one killed mid-send.
WRITE_BATCH_PER_SLOT = 2
WRITE_WAIT = 0.1

# statusd.sync.outbox.Outbox.write's answer; renewed None: unknown (the write failed)
Write = tuple[list[RowOutcome], set[int] | None]


class RunState:
    """Where each claimed row of one run is: ready (claimed, not sent), sending, or sent."""

    def __init__(self, concurrency: int, lease: float) -> None:
        self.report = DrainReport()
        self.concurrency = concurrency
        self.lease = lease
        # Rows being sent: more than the send slots (statusd.sync.send_slots), since a row waiting
        # out a retry's backoff holds no slot and the slots go to the rows that can use them.
        self.sending_cap = concurrency * ROWS_PER_SLOT
        # One batch claimed ahead keeps every send slot busy (a claim is a DB round trip a freed
        # slot would otherwise wait for); the rows waiting are renewed like any held row.
        self.capacity = self.sending_cap + concurrency * 2
        self.ready: deque[ClaimedRow] = deque()
        # Tasks that finished and are not accounted for yet, in the order they finished. Each
        # task reports here itself (a done callback), so a wake-up costs the tasks that finished,
        # not a pass over every task in flight as `asyncio.wait` makes (hundreds of rows are).
        self.done: deque[asyncio.Task[Any]] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self.leases: dict[int, RowLease] = {}  # every row held: ready, sending, or waiting to write
        self.sends: set[asyncio.Task[SendResult]] = set()  # rows handed off to a task of their own
        self.lanes: set[asyncio.Task[None]] = set()
        self.lanes_busy = 0  # lanes with a row
        self._idle_lanes: deque[asyncio.Future[None]] = deque()
        self.closing = False  # the run is ending: idle lanes return
        self.results: list[SendResult] = []  # sent (or given back), waiting for the next write
        self.write_batch = max(1, concurrency * WRITE_BATCH_PER_SLOT)
        self._oldest_result = 0.0  # monotonic, when the oldest of `results` arrived
        self.claiming: asyncio.Task[list[ClaimedRow]] | None = None
        self.writing: asyncio.Task[Write] | None = None
        self.exhausted = False  # the last claim found fewer rows than asked
        # A claimed row was given back unsent, its lease too short to start: claims commit too
        # late to be of use (a struggling database). The run stops instead of claiming again.
        self.lease_starved = False
        self._asked = 0
        self._claim_started = 0.0
        self._writing_ids: set[int] = set()  # results in the write under way
        self._renewing: list[int] = []
        self._renew_started = 0.0
        # The earliest renewable deadline (None: none held), kept until the leases change (a
        # claim, a write starting or ending), since a send finishing changes no lease.
        self._earliest: float | None = None
        self._earliest_stale = True

    def claim_limit(self, max_rows: int | None) -> int:
        """How many rows to claim now (0: not now)."""
        room = self.capacity - self.in_send() - len(self.ready)
        if max_rows is not None:
            room = min(room, max_rows - self.report.claimed)
        # While rows are ready, wait for a quarter of the room: fewer, larger claims.
        if self.ready and room < max(1, self.capacity // 4):
            return 0
        return room

    def start_claim(self, limit: int, claim: Coroutine[Any, Any, list[ClaimedRow]]) -> None:
        self._asked = limit
        # Taken before the claim's statement sets lease_until: our deadline is never the later.
        self._claim_started = time.monotonic()
        self.claiming = self._track(asyncio.create_task(claim))

    def in_send(self) -> int:
        """Rows in their send: in a lane, or handed off to a task."""
        return self.lanes_busy + len(self.sends)

    def start_lanes(self, lane: Callable[[], Coroutine[Any, Any, None]]) -> None:
        for _ in range(self.concurrency):
            self.lanes.add(self._track(asyncio.create_task(lane())))

    async def next_row(self) -> ClaimedRow | None:
        """The next ready row for a lane, once one is and fewer than `sending_cap` rows are in
        their send; None when the run is closing. The row counts as in its send until the lane
        reports it `sent` or hands it off."""
        while not self.closing:
            if self.ready and self.in_send() < self.sending_cap:
                self.lanes_busy += 1
                return self.ready.popleft()
            idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_lanes.append(idle)
            try:
                await idle
            finally:
                if not idle.done():
                    idle.cancel()
        return None

    def sent(self, result: SendResult) -> None:
        """A lane's row is sent (or given back): its result waits for the next write."""
        self.lanes_busy -= 1
        self._record(result)
        # The loop has something to do with it only if it may claim, or write now.
        if self.claiming is None or (self.writing is None and self._write_now()):
            self._wake_loop()

    def hand_off(self, send: Coroutine[Any, Any, SendResult]) -> None:
        """A lane's row goes on in a task of its own (a retry's backoff, a busy send slot)."""
        self.lanes_busy -= 1
        self.sends.add(self._track(asyncio.create_task(send)))

    def close(self) -> None:
        """Idle lanes return; a lane with a row finishes that row first."""
        self.closing = True
        self._wake_lanes(len(self._idle_lanes))

    def _wake_lanes(self, n: int) -> None:
        while n > 0 and self._idle_lanes:
            idle = self._idle_lanes.popleft()
            if not idle.done():
                idle.set_result(None)
                n -= 1

    def _record(self, result: SendResult) -> None:
        self.lease_starved = self.lease_starved or result.outcome is RowOutcome.RELEASED
        if not self.results:
            self._oldest_result = time.monotonic()
        self.results.append(result)

    def release_ready(self) -> None:
        """Give back every row claimed but not sent (written with the next batch)."""
        if self.ready and not self.results:
            self._oldest_result = time.monotonic()
        while self.ready:
            self.results.append(SendResult(self.ready.popleft(), RowOutcome.RELEASED, {}))

    def renewal_due(self, now: float) -> float | None:
        """Seconds until the held rows need a renewal (<= 0: now); None when nothing is held.

        Rows in the write under way are left out: that write ends their lease one way or the
        other."""
        if self._earliest_stale:
            self._earliest = min(
                (
                    lease.deadline
                    for row_id, lease in self.leases.items()
                    if row_id not in self._writing_ids and lease.renewable and not lease.lost
                ),
                default=None,
            )
            self._earliest_stale = False
        if self._earliest is None:
            return None
        return self._earliest - (self.lease - RENEW_AFTER) - now

    def write_due(self, now: float) -> float | None:
        """Seconds until the results waiting should be written (<= 0: now); None: none wait."""
        if not self.results:
            return None
        if self._write_now():
            return 0.0
        return self._oldest_result + WRITE_WAIT - now

    def _write_now(self) -> bool:
        return len(self.results) >= self.write_batch or not (self.ready or self.in_send())

    def held_until(self, batch: list[SendResult]) -> float:
        """The earliest lease deadline among `batch`'s rows (monotonic): until then, all are ours."""
        deadlines = [self.leases[r.row.id].deadline for r in batch if r.row.id in self.leases]
        return min(deadlines, default=0.0)

    def start_write(
        self,
        write: Callable[[list[SendResult], list[int], float], Coroutine[Any, Any, Write]],
        now: float,
    ) -> None:
        """Write the waiting results, renewing every other held row if one is due."""
        batch, self.results = self.results, []
        self._writing_ids = {result.row.id for result in batch}
        self._earliest_stale = True
        due = self.renewal_due(now)
        self._renewing = (
            [
                row_id
                for row_id, lease in self.leases.items()
                if row_id not in self._writing_ids and lease.renewable and not lease.lost
            ]
            if due is not None and due <= 0
            else []
        )
        self._renew_started = now
        self.writing = self._track(
            asyncio.create_task(write(batch, self._renewing, self.held_until(batch)))
        )

    def busy(self) -> bool:
        """Whether a row is ready or in its send, or a task is running or finished and not yet
        accounted for."""
        return bool(
            self.ready
            or self.lanes_busy
            or self.sends
            or self.claiming
            or self.writing
            or self.done
        )

    def _track(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        task.add_done_callback(self._finished_one)
        return task

    def _finished_one(self, task: asyncio.Task[Any]) -> None:
        self.done.append(task)
        self._wake_loop()

    def _wake_loop(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def next_done(self, wake_after: float | None) -> list[asyncio.Task[Any]]:
        """The tasks that finished since the last call, waiting for one if none has (at most
        `wake_after` seconds: then possibly none)."""
        if not self.done:
            loop = asyncio.get_running_loop()
            wakeup = self._wakeup = loop.create_future()
            timer = loop.call_later(wake_after, _wake, wakeup) if wake_after is not None else None
            try:
                await wakeup
            finally:
                self._wakeup = None
                if timer is not None:
                    timer.cancel()
        finished = list(self.done)
        self.done.clear()
        return finished

    def finished(self, task: asyncio.Task[Any]) -> None:
        """Account for one finished task; a failed claim or a bug in a send raises here."""
        if task is self.claiming:
            self.claiming = None
            rows: list[ClaimedRow] = task.result()
            self.report.claimed += len(rows)
            self.exhausted = len(rows) < self._asked
            deadline = self._claim_started + self.lease
            for row in rows:
                held = self.leases.get(row.id)
                if held is not None:
                    # Ours already (its lease had lapsed, and this claim took it again): the
                    # claim extended it; it is queued or in flight once, never twice.
                    held.deadline = max(held.deadline, deadline)
                    continue
                self.leases[row.id] = RowLease(deadline)
                self.ready.append(row)
            self._earliest_stale = True
            self._wake_lanes(len(self.ready))
        elif task is self.writing:
            self.writing = None
            outcomes, renewed = task.result()
            for outcome in outcomes:
                setattr(self.report, outcome.value, getattr(self.report, outcome.value) + 1)
            self.renewed(renewed)
            for row_id in self._writing_ids:
                self.leases.pop(row_id, None)
            self._writing_ids = set()
            self._earliest_stale = True
            # A written row may unblock its workload's next one; new transitions may have landed.
            self.exhausted = False
        elif task in self.lanes:
            self.lanes.discard(task)
            task.result()  # a lane ends when the run closes; a bug in a send raises here
        else:
            self.sends.discard(task)
            self._record(task.result())
            self._wake_lanes(1)  # one more row may start its send

    def renewed(self, renewed: set[int] | None) -> None:
        """Apply a renewal: new deadlines for the rows renewed, the others are no longer ours.

        None (the write failed): nothing is known, every row keeps the deadline it had and is
        not renewed again (its send stops starting attempts in time; a later run takes it)."""
        deadline = self._renew_started + self.lease
        self._earliest_stale = True
        for row_id in self._renewing:
            lease = self.leases.get(row_id)
            if lease is None:
                continue
            if renewed is None:
                lease.renewable = False  # its send stops starting attempts in time
            elif row_id in renewed:
                lease.deadline = max(lease.deadline, deadline)
            else:
                lease.lost = True
        self._renewing = []


def _wake(wakeup: asyncio.Future[None]) -> None:
    if not wakeup.done():
        wakeup.set_result(None)
