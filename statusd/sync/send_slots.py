"""How many requests the drain keeps in flight to one peer: AIMD between 1 and a ceiling.

A request holds a send slot only while it is on the wire; a row waiting to retry (its backoff
sleep) holds none, so one failing row never idles a slot that a healthy row could use.

The limit adapts over windows of completed requests (at least the limit's worth, so a window
is about one round trip of the whole window in flight):
- more than BACK_OFF_RATIO of them failed transiently (5xx, 429, timeouts, refused
  connections): the peer is failing, the limit is multiplied by DECREASE (never below 1: one
  request keeps probing for the recovery);
- otherwise it grows by one, up to the ceiling (STATUSD_SYNC_CONCURRENCY), which is never
  exceeded: a peer that fails a few requests at random keeps the whole ceiling, one that is down
  gets one request at a time, and one that recovers gets its slots back a window at a time.
While the limit is below the ceiling the peer is `failing`, and a row's retries back off
exponentially (statusd.sync.lease.retry_sleep); otherwise a failed row is bad luck and retries
after the first, short sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from statusd.sync.delivery import TransientDeliveryError

BACK_OFF_RATIO = 0.5  # a window with more failures than this backs off
DECREASE = 0.5
MIN_WINDOW = 8  # completions per decision at least, so a low limit is not judged on one answer


class SendSlots:
    """Send slots for one peer; `async with slots.slot():` around each request."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(self.ceiling)
        self.in_flight = 0
        self.max_in_flight = 0  # the most ever in flight at once (tests and metrics read it)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ok = 0
        self._failed = 0
        self._backed_off = False  # a window failed, and the limit has not grown back since
        self._slot = _Slot(self)

    def allowed(self) -> int:
        return max(1, int(self.limit))

    def free(self) -> bool:
        """Whether `slot()` would be taken at once (nobody waiting, fewer than allowed in flight)."""
        return not self._waiters and self.in_flight < self.allowed()

    @property
    def failing(self) -> bool:
        """Whether a window backed the limit off and it has not grown back to the ceiling yet:
        the peer is failing as a whole, not a few requests at random. (Kept apart from the limit:
        a ceiling of 1 cannot halve, but its peer can fail.)"""
        return self._backed_off

    def slot(self) -> _Slot:
        """Hold a slot for one request (`async with slots.slot():`); a TransientDeliveryError
        counts as the peer failing, a return as it answering; anything else (a bug, a
        cancellation) tells nothing."""
        return self._slot

    async def _acquire(self) -> None:
        if self.free():
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _wake took the slot on our behalf
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(ok=None)  # woken, then cancelled: hand the slot on
            else:
                with contextlib.suppress(ValueError):  # _wake may have dropped it already
                    self._waiters.remove(waiter)
            raise

    def _take(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _release(self, *, ok: bool | None) -> None:
        self.in_flight -= 1
        if ok is True:
            self._ok += 1
        elif ok is False:
            self._failed += 1
        done = self._ok + self._failed
        if done >= max(self.allowed(), MIN_WINDOW):
            if self._failed > BACK_OFF_RATIO * done:
                self.limit = max(1.0, self.limit * DECREASE)
                self._backed_off = True
            else:
                self.limit = min(float(self.ceiling), self.limit + 1)
                self._backed_off = self.limit < self.ceiling and self._backed_off
            self._ok = self._failed = 0
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.allowed():
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled while waiting
                continue
            self._take()
            waiter.set_result(None)


class _Slot:
    """`SendSlots.slot()`: a plain async context manager holding no state of one use, so one
    instance serves every request to the peer (a generator-based one would build a generator
    and its frames per request: a tenth of a healthy send's own bookkeeping)."""

    __slots__ = ("_slots",)

    def __init__(self, slots: SendSlots) -> None:
        self._slots = slots

    async def __aenter__(self) -> None:
        await self._slots._acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc_type is None:
            self._slots._release(ok=True)
        elif issubclass(exc_type, TransientDeliveryError):
            self._slots._release(ok=False)
        else:
            self._slots._release(ok=None)
