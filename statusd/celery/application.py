"""The Celery app: Redis (or RabbitMQ) broker, queues sweep / poll / sync, beat schedule.

Tasks are referred to by name (statusd.celery.names), so the app imports none of them: a worker
imports the entry points (`include`). Build the app with `create_celery(settings)`; `statusd
worker` / `statusd beat` do that and start it programmatically. Building it configures nothing
else in the process: an API process that only sends tasks gets no worker hooks (the `worker`
command attaches those, statusd.celery.worker_runtime). The module-level `app` exists only for
`celery -A statusd.celery.application` (Flower, `celery inspect`): it is built from the
environment on first access, never at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from statusd.celery.broker_transport import REDIS_SCHEMES, transport_path
from statusd.celery.budgets import budgets
from statusd.celery.names import (
    ALERT_RESEND_TASK,
    POLL_TASK,
    QUEUES,
    RETENTION_TASK,
    SWEEP_TASK,
    SYNC_DRAIN_DUE_TASK,
    SYNC_DRAIN_TASK,
    TASK_MODULES,
    QueueName,
)
from statusd.errors import ConfigError
from statusd.settings import BrokerQueueType, Settings
from statusd.settings_loader import load_settings

AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")
BEAT_SCHEDULER = "statusd.celery.beat_leader:LeaderScheduler"
# Broker connections per process. Managed Redis caps connections; workers that grew their pools
# without bound have taken production pipelines down.
BROKER_POOL_LIMIT = 4
BROKER_MAX_CONNECTIONS = 10


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """What beat sends. Each message expires after two intervals: a backlog of sweeps that a dead
    worker never ran is useless once a newer one is queued."""
    schedule: dict[str, dict[str, Any]] = {
        "sweep": {
            "task": SWEEP_TASK,
            "schedule": settings.sweep_interval,
            "options": {
                "queue": QueueName.SWEEP.value,
                "expires": max(2 * settings.sweep_interval, 1.0),
            },
        },
        "sync-drain-due": {
            "task": SYNC_DRAIN_DUE_TASK,
            "schedule": settings.sync_interval,
            "options": {
                "queue": QueueName.SYNC.value,
                "expires": max(2 * settings.sync_interval, 1.0),
            },
        },
        "retention-prune": {
            "task": RETENTION_TASK,
            "schedule": settings.retain_interval,
            "options": {"queue": QueueName.SYNC.value, "expires": settings.retain_interval},
        },
    }
    if settings.alertmanager_urls:
        schedule["alertmanager-resend"] = {
            "task": ALERT_RESEND_TASK,
            "schedule": settings.alertmanager_resend_s,
            "options": {
                "queue": QueueName.SYNC.value,
                "expires": max(2 * settings.alertmanager_resend_s, 1.0),
            },
        }
    return schedule


def task_queues(settings: Settings) -> list[Queue]:
    """sweep, poll and sync, each on its own direct exchange; quorum queues when asked for.

    With `x-queue-type: quorum` Celery detects the quorum queues itself and stops using global
    QoS, which quorum queues refuse (worker_detect_quorum_queues, on by default)."""
    arguments: dict[str, Any] | None = None
    if settings.broker_queue_type is BrokerQueueType.QUORUM:
        if not settings.effective_broker_url.startswith(AMQP_SCHEMES):
            raise ConfigError(
                "STATUSD_BROKER_QUEUE_TYPE=quorum needs a RabbitMQ broker (amqp://...); "
                "a Redis broker has no queue types: unset it or set STATUSD_BROKER_URL."
            )
        arguments = {"x-queue-type": "quorum"}
    return [
        Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments=arguments)  # type: ignore[no-untyped-call]
        for name in QUEUES
    ]


def _transport_options(settings: Settings) -> dict[str, Any]:
    b = budgets(settings)
    url = settings.effective_broker_url
    if url.startswith(REDIS_SCHEMES):
        return {
            # With late acks an unacked message is redelivered after this long; it must exceed
            # the longest task (else a slow poll is run twice) yet stay short enough that a
            # worker lost mid-task is noticed within minutes.
            "visibility_timeout": int(max(300.0, 4 * max(b.poll_hard_s, b.sweep_hard_s))),
            "max_connections": BROKER_MAX_CONNECTIONS,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 30,
        }
    return {}


def create_celery(settings: Settings) -> Celery:
    """The Celery app for these settings (broker, queues, routes, reliability, beat schedule)."""
    b = budgets(settings)
    app = Celery("statusd", include=list(TASK_MODULES))
    url = settings.effective_broker_url
    app.conf.update(
        broker_url=url,
        # A Redis broker gets kombu's Redis transport with a restart of the broker survived
        # (statusd.celery.broker_transport); RabbitMQ keeps the transport its URL names.
        broker_transport=transport_path() if url.startswith(REDIS_SCHEMES) else None,
        broker_connection_retry_on_startup=True,
        broker_pool_limit=BROKER_POOL_LIMIT,
        broker_transport_options=_transport_options(settings),
        # Each queue gets its own direct exchange and routing key. A bare Queue(name) is bound
        # to the default exchange with the default key, so every queue would receive every task.
        task_queues=task_queues(settings),
        task_default_queue=QueueName.SWEEP.value,
        task_routes={
            SWEEP_TASK: {"queue": QueueName.SWEEP.value},
            POLL_TASK: {"queue": QueueName.POLL.value},
            SYNC_DRAIN_TASK: {"queue": QueueName.SYNC.value},
            SYNC_DRAIN_DUE_TASK: {"queue": QueueName.SYNC.value},
            RETENTION_TASK: {"queue": QueueName.SYNC.value},
            ALERT_RESEND_TASK: {"queue": QueueName.SYNC.value},
        },
        # Reliability: a task is acknowledged after it ran, and a worker killed mid-task gives its
        # message back; one message prefetched per process so a slow poll chunk never holds
        # others hostage in its prefetch buffer.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task still running when the broker connection drops finishes its work (every task
        # is idempotent); if its ack cannot reach the broker, the message comes back after the
        # visibility timeout. Cancelling it would kill the prefork child mid-transaction.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_prefetch_multiplier=1,
        task_annotations={
            POLL_TASK: {"soft_time_limit": b.poll_soft_s, "time_limit": b.poll_hard_s},
            SWEEP_TASK: {"soft_time_limit": b.sweep_soft_s, "time_limit": b.sweep_hard_s},
        },
        # Results are never read: state lives in the database, not in a result backend.
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        # Events on, so Flower and `celery events` work against these workers unchanged.
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        # Our structlog lines go straight to stderr, one JSON line each; Celery's stdout proxy
        # would re-log (or drop) them as WARNING text.
        worker_redirect_stdouts=False,
        beat_schedule=beat_schedule(settings),
        # Only the beat holding the Redis leader lease sends: a second beat is a hot standby.
        beat_scheduler=BEAT_SCHEDULER,
        timezone="UTC",
    )
    return app


def schedule_file(settings: Settings) -> Path:
    """Beat's schedule state, under the state dir (created on demand)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return settings.state_dir / "celerybeat-schedule"


_app: Celery | None = None


def __getattr__(name: str) -> Celery:
    """`celery -A statusd.celery.application ...`: the app from the environment, built on first use."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_celery(load_settings())
        return _app
    raise AttributeError(name)
