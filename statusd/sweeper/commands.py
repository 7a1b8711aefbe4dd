"""CLI verbs of statusd.sweeper: `worker`, `beat`, `simulate`."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from statusd.commands import operator_errors
from statusd.settings import Settings

SCHEDULE_HELP = "Beat schedule file (default: <state_dir>/celerybeat-schedule)."


def _settings() -> Settings:
    from statusd.logs import configure_logging

    settings = Settings()
    configure_logging(settings)
    return settings


def _queues(raw: str) -> str:
    from statusd.sweeper.celery_app import QUEUES

    names = [q.strip() for q in raw.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if not names or unknown:
        raise typer.BadParameter(
            f"unknown queue(s) {unknown or raw!r}; choose from {', '.join(QUEUES)}"
        )
    return ",".join(names)


def worker(
    queues: Annotated[
        str,
        typer.Option(
            "--queues", "-Q", help="Comma-separated queues to consume: sweep, poll, sync."
        ),
    ] = "sweep,poll,sync",
    beat: Annotated[
        bool, typer.Option("--beat", "-B", help="Also run the beat scheduler here.")
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", "-c", min=0, help="Worker processes (0: one per CPU core)."),
    ] = 0,
    schedule: Annotated[Path | None, typer.Option("--schedule", help=SCHEDULE_HELP)] = None,
) -> None:
    """Run a Celery worker for the sweeper (and sync) queues."""
    from statusd.sweeper.celery_app import create_celery, schedule_file

    settings = _settings()
    with operator_errors():
        app = create_celery(settings)
    argv = [
        "worker",
        f"--queues={_queues(queues)}",
        f"--concurrency={concurrency or os.cpu_count() or 1}",
        f"--loglevel={settings.log_level.upper()}",
        # Unique per process: two workers on one host must not share a node name.
        f"--hostname=statusd-{os.getpid()}@{socket.gethostname()}",
        "--without-mingle",  # no startup chatter between workers: nothing here needs it
    ]
    if beat:
        argv += ["--beat", f"--schedule={schedule or schedule_file(settings)}"]
    app.worker_main(argv)


def beat(
    schedule: Annotated[Path | None, typer.Option("--schedule", help=SCHEDULE_HELP)] = None,
) -> None:
    """Run the beat scheduler alone (it sends `sweep` every STATUSD_SWEEP_INTERVAL seconds)."""
    from statusd.sweeper.celery_app import create_celery, schedule_file

    settings = _settings()
    with operator_errors():
        app = create_celery(settings)
    app.start(
        [
            "beat",
            f"--schedule={schedule or schedule_file(settings)}",
            f"--loglevel={settings.log_level.upper()}",
        ]
    )


def register(app: typer.Typer) -> None:
    """Add this area's verbs to the statusd CLI."""
    from statusd.simulate.cli import simulate

    app.command("worker")(worker)
    app.command("beat")(beat)
    app.command("simulate")(simulate)
