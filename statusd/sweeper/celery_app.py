"""The Celery app: Redis (or RabbitMQ) broker, queues sweep / poll / sync, beat schedule.

Skeleton by the lead; the sweeper work owns and tunes it. Tasks are referred to by name so
areas (sweeper, sync) add theirs without importing each other.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from statusd.settings import Settings

QUEUES = ("sweep", "poll", "sync")


def create_celery(settings: Settings) -> Celery:
    app = Celery("statusd", include=["statusd.sweeper.tasks", "statusd.sync.tasks"])
    app.conf.update(
        broker_url=settings.effective_broker_url,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="sweep",
        task_routes={
            "statusd.sweeper.sweep": {"queue": "sweep"},
            "statusd.sweeper.poll": {"queue": "poll"},
            "statusd.sync.*": {"queue": "sync"},
        },
    )
    return app
