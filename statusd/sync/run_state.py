"""The bookkeeping of one drain run: rows claimed ahead, sends in flight, results to record.

statusd.sync.drain drives it; this module only says which row goes where, so the rules (claim in
batches, claim ahead only within the lease, give back what will not be sent) read in one place.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

from statusd.sync.outbox import ClaimedRow, Outcome, Result


@dataclass
class DrainReport:
    """What one drain run did (returned by the Celery tasks and `statusd sync drain`)."""

    claimed: int = 0
    delivered: int = 0
    dead: int = 0
    deferred: int = 0  # gave up for this run: attempts and next_attempt_at recorded
    lease_lost: int = 0  # the result could not be recorded under our lease (expired, DB down)
    released: int = 0  # claimed ahead but not sent (deadline, row limit, waited too long)
    stopped_early: bool = False  # deadline or row limit reached with work possibly left

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunState:
    """Where each claimed row of one run is: ready (claimed, not sent), sending, or sent."""

    def __init__(self, concurrency: int, prefetch_window: float) -> None:
        self.report = DrainReport()
        self.concurrency = concurrency
        # Claim ahead (up to one more batch) only when a row can wait and still finish in its lease.
        self.window = prefetch_window
        self.capacity = concurrency * 2 if prefetch_window > 0 else concurrency
        self.ready: deque[tuple[ClaimedRow, float]] = deque()
        self.sends: set[asyncio.Task[Result]] = set()
        self.results: list[Result] = []  # sent (or given back), waiting for the next record batch
        self.claiming: asyncio.Task[list[ClaimedRow]] | None = None
        self.recording: asyncio.Task[list[Outcome]] | None = None
        self.exhausted = False  # the last claim found fewer rows than asked
        self._asked = 0
        self._claim_started = 0.0

    def claim_limit(self, max_rows: int | None) -> int:
        """How many rows to claim now (0: not now)."""
        room = self.capacity - len(self.sends) - len(self.ready)
        if max_rows is not None:
            room = min(room, max_rows - self.report.claimed)
        # While rows are ready, wait for a quarter of the room: fewer, larger claims.
        if self.ready and room < max(1, self.concurrency // 4):
            return 0
        return room

    def start_claim(self, limit: int, claim: Coroutine[Any, Any, list[ClaimedRow]]) -> None:
        self._asked = limit
        # The lease starts inside the claim's transaction, so this start time is conservative.
        self._claim_started = time.monotonic()
        self.claiming = asyncio.create_task(claim)

    def start_sends(self, handle: Callable[[ClaimedRow], Coroutine[Any, Any, Result]]) -> None:
        now = time.monotonic()
        while self.ready and len(self.sends) < self.concurrency:
            row, claimed_at = self.ready.popleft()
            if self.window > 0 and now - claimed_at > self.window:
                self.results.append(Result(row, Outcome.RELEASED, {}))  # too late to finish
                continue
            self.sends.add(asyncio.create_task(handle(row)))

    def release_ready(self) -> None:
        """Give back every row claimed but not sent (recorded with the next batch)."""
        while self.ready:
            row, _ = self.ready.popleft()
            self.results.append(Result(row, Outcome.RELEASED, {}))

    def waiting(self) -> set[asyncio.Task[Any]]:
        tasks: set[asyncio.Task[Any]] = set(self.sends)
        tasks.update(task for task in (self.claiming, self.recording) if task is not None)
        return tasks

    def finished(self, task: asyncio.Task[Any]) -> None:
        """Account for one finished task; a failed claim or a bug in a send raises here."""
        if task is self.claiming:
            self.claiming = None
            rows: list[ClaimedRow] = task.result()
            self.report.claimed += len(rows)
            self.exhausted = len(rows) < self._asked
            self.ready.extend((row, self._claim_started) for row in rows)
        elif task is self.recording:
            self.recording = None
            for outcome in task.result():
                setattr(self.report, outcome.value, getattr(self.report, outcome.value) + 1)
            # A recorded row may unblock its workload's next one; new transitions may have landed.
            self.exhausted = False
        else:
            self.sends.discard(task)
            self.results.append(task.result())
