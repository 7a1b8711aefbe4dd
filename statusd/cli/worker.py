"""Celery verbs: `worker` (attaches the worker hooks) and `beat`."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from celery.concurrency import get_implementation
from celery.exceptions import SecurityError
from celery.platforms import maybe_drop_privileges
from celery.utils.log import mlevel

from statusd.celery import sync_slots
from statusd.celery.names import DETECTION_QUEUES, QUEUES, QueueName
from statusd.cli.common import fail, load_settings, operator_errors
from statusd.oncall import multiproc
from statusd.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

SCHEDULE_HELP = (
    "Beat schedule file (default: <state_dir>/celerybeat-schedule); each beat needs its own."
)


def _queues(raw: str) -> list[QueueName]:
    names = [q.strip() for q in raw.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if not names or unknown:
        raise typer.BadParameter(
            f"unknown queue(s) {unknown or raw!r}; choose from {', '.join(QUEUES)}"
        )
    return [QueueName(n) for n in dict.fromkeys(names)]


def _pool_size(queues: list[QueueName], concurrency: int) -> int:
    """Prefork children. Sharing a worker with the sweeper, drains are kept to their own slots
    (statusd.celery.sync_slots) and the sweeper gets at least one more."""
    size = concurrency or os.cpu_count() or 1
    if QueueName.SYNC in queues and DETECTION_QUEUES & set(queues):
        size = max(size, sync_slots.SHARED_WORKER_SYNC_SLOTS + 1)
    return size


def worker(
    queues: Annotated[
        str,
        typer.Option(
            "--queues", "-Q", help=f"Comma-separated queues to consume: {', '.join(QUEUES)}."
        ),
    ] = ",".join(QUEUES),
    beat: Annotated[
        bool, typer.Option("--beat", "-B", help="Also run the beat scheduler here.")
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", "-c", min=0, help="Worker processes (0: one per CPU core)."),
    ] = 0,
    schedule: Annotated[Path | None, typer.Option("--schedule", help=SCHEDULE_HELP)] = None,
) -> None:
    """Run a Celery worker for the sweeper (and sync) queues.

    With STATUSD_METRICS_PORT set, the main process serves /metrics for all its prefork children."""
    metrics_dir = _metrics_group()
    # Only now, with PROMETHEUS_MULTIPROC_DIR set, what imports prometheus_client (the metrics
    # of the sweeper, the runtime's ledger): every metric the prefork children inherit records
    # into the group's directory.
    from statusd.celery.application import create_celery, schedule_file
    from statusd.celery.worker_runtime import attach_to_worker
    from statusd.recovery import check_at_start
    from statusd.wiring import open_runtime

    settings = load_settings(logging=True)
    asyncio.run(check_at_start(settings))  # Redis lost its data: rebuild the sweeper's view
    with operator_errors():
        app = create_celery(settings)
    attach_to_worker(settings, open_runtime)
    _attach_metrics(settings)
    chosen = _queues(queues)
    if QueueName.SYNC in chosen and DETECTION_QUEUES & set(chosen):
        sync_slots.limit_drains(sync_slots.SHARED_WORKER_SYNC_SLOTS)
    options = worker_options(
        app,
        queues=chosen,
        concurrency=_pool_size(chosen, concurrency),
        log_level=settings.log_level,
        beat_schedule=(schedule or schedule_file(settings)) if beat else None,
    )
    try:
        code = _run_worker(app, options)
    finally:
        sync_slots.unlimited()
        multiproc.end_group(multiproc.ProcessGroup.WORKER, metrics_dir)
    # A worker that stopped on an unrecoverable error must exit non-zero, so an orchestrator
    # restarts it instead of calling it done.
    if code:
        raise typer.Exit(int(code))


def worker_options(
    app: Celery,
    *,
    queues: list[QueueName],
    concurrency: int,
    log_level: str,
    beat_schedule: Path | None,
) -> dict[str, Any]:
    """What `celery worker` would hand app.Worker for these options, every one of its keywords.

    statusd starts the worker itself instead of through `app.worker_main`: celery's command
    line imports all its subcommands first (the amqp REPL and prompt_toolkit among them), a
    third of a second of CPU per worker. tests/test_cli_worker_options.py holds these to what
    celery's own parsing gives."""
    return {
        # Unique per process: two workers on one host must not share a node name.
        "hostname": f"statusd-{os.getpid()}@{socket.gethostname()}",
        "queues": [str(q) for q in queues],
        "exclude_queues": None,
        "include": None,
        "concurrency": concurrency,
        "pool": get_implementation(app.conf.worker_pool),
        "pool_cls": None,
        "pool_start_method": None,
        "loglevel": mlevel(log_level.upper()),
        "logfile": None,
        "pidfile": None,
        "statedb": None,
        "optimization": "default",
        "prefetch_multiplier": app.conf.worker_prefetch_multiplier,
        "autoscale": None,
        "max_tasks_per_child": None,
        "max_memory_per_child": None,
        "time_limit": None,
        "soft_time_limit": None,
        "task_events": None,
        "purge": False,
        # No startup chatter or gossip between workers: nothing here needs it, and gossip's
        # restart after a broker outage only logs errors.
        "without_mingle": True,
        "without_gossip": True,
        "without_heartbeat": False,
        "heartbeat_interval": None,
        "beat": True if beat_schedule is not None else None,
        "schedule_filename": str(beat_schedule or app.conf.beat_schedule_filename),
        "scheduler": None,
        "detach": False,
        "executable": None,
        "umask": None,
        "no_color": False,
        "quiet": False,
    }


def _run_worker(app: Celery, options: dict[str, Any]) -> int:
    """Start the worker as `celery worker` does (privileges checked first) and return its exit
    status once it has stopped."""
    try:
        maybe_drop_privileges()  # no uid/gid to drop to: refuses a setuid-root process
        controller = app.Worker(**options)
        controller.start()
    except SecurityError as exc:
        fail(str(exc), code=1)
    return int(controller.exitcode or 0)


def _metrics_group() -> Path:
    """Start the worker's metrics group: its prefork children inherit this process's metric
    objects, so PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported here.
    Nothing the CLI imported so far has done that; if something did, this same command runs
    once more, in place (same pid), with the variable set from the start."""
    if "prometheus_client" not in sys.modules:
        return multiproc.start_group(multiproc.ProcessGroup.WORKER)
    from statusd.oncall import multiproc_samples

    if not multiproc_samples.active():
        if multiproc.ENV in os.environ:  # set, yet not seen by prometheus_client: never loop
            raise typer.BadParameter(
                f"{multiproc.ENV} must be set before statusd starts, not by a wrapper in-process"
            )
        multiproc.start_group(multiproc.ProcessGroup.WORKER)
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return multiproc.start_group(multiproc.ProcessGroup.WORKER)


def _attach_metrics(settings: Settings) -> None:
    """Worker signal hooks for metrics: each prefork child marks itself dead on its way out; the
    main process runs the /metrics listener (started once the pool exists, so no child inherits
    a thread it does not have) and closes it on shutdown."""
    from celery import signals

    from statusd.oncall import multiproc_samples
    from statusd.oncall.metrics_thread import MetricsThread

    listener: list[MetricsThread] = []

    def child_exiting(**_: Any) -> None:
        multiproc_samples.process_exited(os.getpid())

    def ready(**_: Any) -> None:
        if settings.metrics_port is not None and not listener:
            listener.append(
                MetricsThread(settings.host, settings.metrics_port, settings.metrics_token).start()
            )

    def shutdown(**_: Any) -> None:
        while listener:
            listener.pop().stop()

    signals.worker_process_shutdown.connect(child_exiting, weak=False)
    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)


def beat(
    schedule: Annotated[Path | None, typer.Option("--schedule", help=SCHEDULE_HELP)] = None,
) -> None:
    """Run the beat scheduler alone (it sends `sweep` every STATUSD_SWEEP_INTERVAL seconds)."""
    from statusd.celery.application import create_celery, schedule_file
    from statusd.celery.worker_runtime import configure

    settings = load_settings(logging=True)
    with operator_errors():
        app = create_celery(settings)
    configure(settings)  # the leader lease (beat_leader) reads them
    options = beat_options(
        app, schedule=schedule or schedule_file(settings), log_level=settings.log_level
    )
    maybe_drop_privileges()  # as `celery beat` does: refuses a setuid-root process
    app.Beat(**options).run()


def beat_options(app: Celery, *, schedule: Path, log_level: str) -> dict[str, Any]:
    """What `celery beat` would hand app.Beat for these options (started without celery's
    command line, as the worker is: see worker_options)."""
    return {
        "schedule": str(schedule),
        "scheduler": app.conf.beat_scheduler,
        "max_interval": None,
        "remote_control": None,
        "hostname": None,
        "loglevel": mlevel(log_level.upper()),
        "logfile": None,
        "pidfile": None,
        "executable": None,
        "quiet": False,
    }


def register(app: typer.Typer) -> None:
    """Add `worker` and `beat` to the statusd CLI."""
    app.command("worker")(worker)
    app.command("beat")(beat)
