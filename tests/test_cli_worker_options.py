"""`statusd worker` and `statusd beat` start Celery without its command line (which imports every
celery subcommand first): what they hand app.Worker / app.Beat must be exactly what `celery
worker` / `celery beat` would hand them for the same options, so the worker runs as before
(queues, concurrency, events, beat, node name, log level)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from statusd.celery.application import create_celery
from statusd.celery.names import QueueName
from statusd.cli.worker import beat_options, worker_options
from statusd.settings import Settings


class Recorder:
    """Stands in for the class Celery's command line instantiates: keeps its keywords."""

    seen: dict[str, Any] = {}

    def __init__(self, **options: Any) -> None:
        Recorder.seen = options
        self.exitcode = 0

    def start(self) -> None:
        pass

    def run(self) -> None:
        pass


def app_for(**settings: Any) -> Celery:
    return create_celery(Settings(redis_url="redis://127.0.0.1:1/0", **settings))


def parsed_by_celery(app: Celery, attribute: str, argv: list[str]) -> dict[str, Any]:
    """The keywords celery's own command line gives app.<attribute> for `argv`."""
    Recorder.seen = {}
    setattr(app, attribute, Recorder)
    try:
        app.start(argv)
    finally:
        delattr(app, attribute)
    assert Recorder.seen, f"celery did not start {attribute} for {argv}"
    return Recorder.seen


@pytest.mark.parametrize(
    ("queues", "concurrency", "beat", "log_level"),
    [
        ([QueueName.SWEEP, QueueName.POLL], 2, False, "INFO"),
        ([QueueName.SWEEP, QueueName.POLL, QueueName.SYNC], 3, True, "debug"),
        ([QueueName.SYNC], 1, False, "WARNING"),
    ],
)
def test_worker_gets_what_celery_worker_would_give_it(
    tmp_path: Path, queues: list[QueueName], concurrency: int, beat: bool, log_level: str
) -> None:
    app = app_for()
    schedule = tmp_path / "schedule" if beat else None
    ours = worker_options(
        app, queues=queues, concurrency=concurrency, log_level=log_level, beat_schedule=schedule
    )
    argv = [
        "worker",
        f"--queues={','.join(queues)}",
        f"--concurrency={concurrency}",
        f"--loglevel={log_level.upper()}",
        f"--hostname=statusd-{os.getpid()}@{socket.gethostname()}",
        "--without-mingle",
        "--without-gossip",
    ]
    if schedule is not None:
        argv += ["--beat", f"--schedule={schedule}"]
    assert ours == parsed_by_celery(app, "Worker", argv)


def test_beat_gets_what_celery_beat_would_give_it(tmp_path: Path) -> None:
    app = app_for()
    schedule = tmp_path / "celerybeat-schedule"
    ours = beat_options(app, schedule=schedule, log_level="info")
    argv = ["beat", f"--schedule={schedule}", "--loglevel=INFO"]
    assert ours == parsed_by_celery(app, "Beat", argv)
