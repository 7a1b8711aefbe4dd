"""Celery queue and task names: a leaf, so producers and tasks agree without importing each other.

Tasks are sent and routed by name; the sweeper, the sync work, the on-call backlog figures and
the Celery app all read them from here and import nothing else of statusd to do so.
"""

from __future__ import annotations

SWEEP_QUEUE = "sweep"
POLL_QUEUE = "poll"
SYNC_QUEUE = "sync"
QUEUES = (SWEEP_QUEUE, POLL_QUEUE, SYNC_QUEUE)
SWEEP_TASK = "statusd.sweeper.sweep"
POLL_TASK = "statusd.sweeper.poll"
SYNC_DRAIN_TASK = "statusd.sync.drain"
SYNC_DRAIN_DUE_TASK = "statusd.sync.drain_due"
RETENTION_TASK = "statusd.retention.prune"  # housekeeping: runs on the sync queue
# The modules a worker imports to register the tasks above.
TASK_MODULES = ("statusd.sweeper.tasks", "statusd.sync.tasks", "statusd.retention_tasks")
