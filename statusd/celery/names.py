"""Celery queue and task names: a leaf, so producers and tasks agree without importing each other.

Tasks are sent and routed by name; the sweeper, the sync work, the on-call backlog figures and
the Celery app all read them from here and import nothing else of statusd to do so.
"""

from __future__ import annotations

from enum import StrEnum


class QueueName(StrEnum):
    """The Celery queues: the pull path's two, and the outbox drain's."""

    SWEEP = "sweep"
    POLL = "poll"
    SYNC = "sync"


QUEUES: tuple[str, ...] = tuple(q.value for q in QueueName)
# The queues that decide verdicts: a failing main API must never hold their slots.
DETECTION_QUEUES = frozenset({QueueName.SWEEP, QueueName.POLL})
SWEEP_TASK = "statusd.sweeper.sweep"
POLL_TASK = "statusd.sweeper.poll"
SYNC_DRAIN_TASK = "statusd.sync.drain"
SYNC_DRAIN_DUE_TASK = "statusd.sync.drain_due"
RETENTION_TASK = "statusd.retention.prune"  # housekeeping: runs on the sync queue
ALERT_RESEND_TASK = "statusd.alerts.resend"  # Alertmanager re-sends: runs on the sync queue
# The modules a worker imports to register the tasks above.
TASK_MODULES = (
    "statusd.celery.sweeper_tasks",
    "statusd.celery.sync_tasks",
    "statusd.celery.retention_tasks",
    "statusd.celery.alert_tasks",
)
