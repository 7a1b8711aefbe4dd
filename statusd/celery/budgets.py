"""Time budgets of the pull path, derived from the settings in one place.

Celery's time limits, the asyncio deadline inside a task and the lease TTLs must agree: a lease
that outlives its task delays the next poll; one that expires before the task ends lets a second
poller in. So they are all computed here from STATUSD_POLL_TIMEOUT / _CHUNK / _CONCURRENCY.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from statusd.settings import Settings

# A poll's lease is kept as a cool-down until this fraction of a sweep interval after the poll
# started (statusd.sweeper.poll_leases): below 1, so a beat that fires a few ms early is not refused a
# workload it should poll.
HOLD_FRACTION = 0.9

# Database work of one poll chunk (bulk load, bookkeeping UPDATE, a transition per changed
# workload): generous, because SQLite serializes writers and a busy database is not a reason to
# kill a task that is making progress.
DB_SLACK_S = 30.0
SWEEP_SOFT_S = 60.0  # finding stale workloads is two ZRANGEBYSCOREs and bulk SELECTs
# The sweep lock's TTL, renewed every third of it while the sweep runs: a sweep cut off (worker
# killed, Redis gone before the release) holds back the next sweeps this long at most, not for
# the sweep's whole time limit.
SWEEP_LOCK_TTL_S = 3.0
# A poll lease's TTL (x the sweep interval, at least the floor): a queued poll's lease lasts this
# long, a running poll renews its own every third of it (statusd.sweeper.poll_leases.LeaseRenewal).
# So a lease cut off by an outage (its release failed while Redis was away and the AOF kept it,
# its worker killed, its message lost with the broker's data) holds its workload back this long
# at most. A queued poll that waits longer than this in the broker is harmless: the next sweep
# leases the workload again, and the old message, finding the lease under another sweep's token,
# polls nothing.
POLL_LEASE_SWEEPS = 4
POLL_LEASE_MIN_S = 20.0
# The asyncio deadline inside a task fires this long before Celery's soft limit, so the task
# unwinds on its own (leases released, sweep lock given back) and the soft limit is only a backstop.
DEADLINE_MARGIN_S = 5.0


@dataclass(frozen=True, slots=True)
class Budgets:
    poll_deadline_s: float  # asyncio deadline inside the poll task
    poll_soft_s: float  # Celery's soft limit: the deadline + DEADLINE_MARGIN_S
    poll_hard_s: float  # Celery kills the child after this
    lease_ms: int  # a poll lease's TTL: queued, or since a running poll's last renewal
    sweep_deadline_s: float  # asyncio deadline inside the sweep task
    sweep_soft_s: float  # Celery's soft limit of the sweep task
    sweep_hard_s: float
    sweep_lock_ms: int  # TTL of the sweep lock (renewed while the sweep runs)
    hold_ms: int  # cool-down after a poll: at most one poll per sweep interval
    take_window_s: float  # a poll task takes queued polls of its sweep this long after it starts


def budgets(settings: Settings) -> Budgets:
    """The time limits and lease TTLs for these settings."""
    waves = math.ceil(settings.poll_chunk / settings.poll_concurrency)
    # A task takes queued polls of its sweep (statusd.sweeper.poll_leases.take_queued) for one sweep
    # interval, only into free slots, so each starts at once and ends within a poll timeout; by
    # then the next sweep has queued its own. Its own chunk takes `waves` timeouts at most.
    take_window = settings.sweep_interval
    poll_deadline = max(settings.poll_timeout * waves, take_window + settings.poll_timeout)
    poll_deadline += DB_SLACK_S
    poll_soft = poll_deadline + DEADLINE_MARGIN_S
    poll_hard = poll_soft + 10.0
    return Budgets(
        poll_deadline_s=poll_deadline,
        poll_soft_s=poll_soft,
        poll_hard_s=poll_hard,
        lease_ms=int(max(POLL_LEASE_MIN_S, POLL_LEASE_SWEEPS * settings.sweep_interval) * 1000),
        sweep_deadline_s=SWEEP_SOFT_S - DEADLINE_MARGIN_S,
        sweep_soft_s=SWEEP_SOFT_S,
        sweep_hard_s=SWEEP_SOFT_S + 30.0,
        sweep_lock_ms=int(SWEEP_LOCK_TTL_S * 1000),
        hold_ms=int(settings.sweep_interval * HOLD_FRACTION * 1000),
        take_window_s=take_window,
    )
