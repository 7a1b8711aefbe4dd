"""The outbox claim lease: how long it lasts, and when a send may still start under it.

One rule, in one place: **a row's send never outlives its claim.** Another drainer may claim a row
as soon as its `lease_until` has passed, so every HTTP attempt must be over, with slack to spare,
before that instant; otherwise two workers can have one row in flight at once (the write-path
merge was reverted for exactly that: a claim that committed late left a row sent after its lease
had lapsed).

- The lease outlives one row's whole send (every in-run attempt at its full timeout, the backoff
  sleeps between them, capped by the retry budget) plus LEASE_SLACK, once the row waited up to
  CLAIM_TO_SEND for its first attempt, so a healthy send never needs a renewal.
- Each row's deadline is tracked on the monotonic clock from BEFORE the statement that set
  `lease_until` (claim or renewal) was sent: never later than the deadline the database holds.
- An attempt starts only if it can end (its full timeout) LEASE_SLACK before that deadline; a
  row that cannot even start its first attempt is given back unsent, and the run stops there
  (claims that commit later than their lease are a database in trouble: a later run retries).
- Rows held for longer (claimed ahead, or sent and waiting to be recorded) get their leases
  renewed in one UPDATE with the next record (statusd.sync.outbox.Outbox.write), once any has
  been held RENEW_AFTER since its lease was last set.
The slack covers what the client cannot see: a peer still processing a request the client timed
out on, and clock skew between drainer hosts (`lease_until` is compared to each host's clock).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from statusd.settings import Settings

LEASE_SLACK = 2.0  # seconds between the end of the last possible attempt and the lease's end
# How long a claimed row may wait before its first attempt (the claim's commit, a free send slot)
# and still have time for its whole send: without it a row is released as soon as it is claimed.
CLAIM_TO_SEND = 2.0
# Seconds before the first in-run retry; doubles, with jitter, while the peer is failing. Short:
# the peer is protected by the drain's shared send slots (statusd.sync.send_slots back off while
# it fails), so a row's own backoff only spreads its retries, and the slowest row's wait is what a
# drain run's tail is. While the peer answers most requests a row that failed a few times in a
# row is bad luck, not a signal: its every retry waits this much, so one unlucky row in 5,000
# (at 20% 5xx, five failures in a row) does not add 3 s of doubling sleeps to the run.
RETRY_INITIAL_WAIT = 0.1
RETRY_MAX_WAIT = 5.0
RETRY_JITTER = RETRY_INITIAL_WAIT  # up to this much random wait is added to every backoff sleep
# Renew the held rows once one has been held this long since its claim or last renewal: early
# enough that a row waiting for a send slot never falls short of the time an attempt needs.
RENEW_AFTER = CLAIM_TO_SEND / 2
# Retries after this many the exponential sleep has reached RETRY_MAX_WAIT: the exponent stops
# growing there (2.0 ** n overflows a float past n = 1023, and STATUSD_SYNC_ATTEMPTS is unbounded).
DOUBLINGS_TO_MAX = math.ceil(math.log2(RETRY_MAX_WAIT / RETRY_INITIAL_WAIT))


def backoff_cap(retry: int) -> float:
    """The longest sleep before in-run retry number `retry` (1-based): exponential plus jitter."""
    doublings = min(retry - 1, DOUBLINGS_TO_MAX)
    return min(RETRY_MAX_WAIT, RETRY_INITIAL_WAIT * 2.0**doublings) + RETRY_JITTER


def retry_sleep(retry: int, *, peer_failing: bool = True) -> float:
    """The sleep before in-run retry number `retry` (1-based): exponential while the peer is
    failing (the first sleep otherwise), capped, jittered (so a fleet of rows does not retry in
    lockstep); never more than backoff_cap(retry)."""
    doublings = min(retry - 1, DOUBLINGS_TO_MAX) if peer_failing else 0
    return min(RETRY_MAX_WAIT, RETRY_INITIAL_WAIT * 2.0**doublings) + random.uniform(
        0, RETRY_JITTER
    )


def send_bound(settings: Settings) -> float:
    """The longest one row's sends can take: every attempt at its full timeout and every backoff
    sleep between them, but never past the retry budget plus one timeout (the drain starts no
    retry whose sleep would cross the budget)."""
    attempts = settings.sync_attempts
    # The sleeps grow for DOUBLINGS_TO_MAX retries, then every further one sleeps the cap: summed
    # in closed form, so any number of attempts costs the same.
    growing = min(attempts - 1, DOUBLINGS_TO_MAX + 1)
    capped = attempts - 1 - growing
    sleeps = sum(backoff_cap(retry) for retry in range(1, growing + 1)) + capped * (
        RETRY_MAX_WAIT + RETRY_JITTER
    )
    every_attempt = attempts * settings.sync_timeout + sleeps
    return min(every_attempt, settings.sync_budget + settings.sync_timeout)


def lease_seconds(settings: Settings) -> float:
    """The claim lease: the wait for a first attempt, one row's whole send, and the slack
    (STATUSD_SYNC_LEASE is a floor)."""
    return max(settings.sync_lease, CLAIM_TO_SEND + send_bound(settings) + LEASE_SLACK)


@dataclass(slots=True)
class RowLease:
    """Our view of one held row's lease, on the monotonic clock (never later than the DB's)."""

    deadline: float
    lost: bool = False  # a renewal found the row no longer ours (recorded, or claimed by another)
    renewable: bool = True  # False after a failed renewal: keep the deadline, do not hammer the DB

    def may_start(self, timeout: float, now: float | None = None) -> bool:
        """Whether an attempt of `timeout` seconds started now ends LEASE_SLACK before the lease."""
        at = time.monotonic() if now is None else now
        return not self.lost and at + timeout + LEASE_SLACK <= self.deadline

    def left(self, now: float) -> float:
        return self.deadline - now
