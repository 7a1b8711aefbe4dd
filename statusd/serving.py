"""Run the aiohttp app: one process, or N processes sharing the port with SO_REUSEPORT.

`statusd serve --workers N` starts N server processes; the kernel spreads connections across
them (SO_REUSEPORT), so one Python process per core handles ingest. The parent only supervises:
SIGINT/SIGTERM are passed on, and if one server dies the others are stopped and the exit is
non-zero, so a process manager restarts the whole set rather than running it half-sized.

Metrics: the N processes are one prometheus_client multiprocess group (statusd.oncall.multiproc).
The parent empties the group's directory and sets PROMETHEUS_MULTIPROC_DIR before spawning (the
children are fresh interpreters, so they import prometheus_client with it set); any child answers
/metrics for all of them, and the parent marks each exited child dead.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog
from aiohttp import web

from statusd.api.deadlines import server_options
from statusd.app import create_app
from statusd.logs import configure_logging
from statusd.oncall import multiproc, multiproc_samples
from statusd.settings import Settings

log = structlog.get_logger("statusd.serving")

SHUTDOWN_TIMEOUT_S = 10.0  # in-flight requests get this long after SIGTERM


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (about 40% more requests per second on ingest), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve_one(settings: Settings, *, consumers: int | None, reuse_port: bool) -> None:
    """Serve until SIGINT/SIGTERM in this process (aiohttp runs the cleanup contexts on the way out)."""

    configure_logging(settings)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(settings, consumers=consumers)
    log.info("serve.start", host=settings.host, port=settings.port, reuse_port=reuse_port)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        reuse_port=reuse_port or None,
        loop=loop,
        print=None,
        access_log=None,  # one log line per heartbeat would cost more than the heartbeat
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        handle_signals=True,
        **server_options(settings),  # header/keep-alive read deadline
    )
    log.info("serve.stopped", port=settings.port)


def _child(settings: Settings, consumers: int | None) -> None:
    serve_one(settings, consumers=consumers, reuse_port=True)


def serve(settings: Settings, *, workers: int = 1, consumers: int | None = None) -> int:
    """Serve with `workers` processes; returns the exit code."""
    if workers <= 1:
        serve_one(settings, consumers=consumers, reuse_port=False)
        return 0
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited loops or pools
    metrics_dir = multiproc.start_group(multiproc.ProcessGroup.SERVE)
    children: list[BaseProcess] = []
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(workers):
            started = ctx.Process(
                target=_child, args=(settings, consumers), name=f"statusd-serve-{index}"
            )
            started.start()
            children.append(started)
        log.info("serve.workers", workers=workers, pids=[c.pid for c in children])
        while not stopping:
            dead = [c for c in children if not c.is_alive()]
            if dead:
                log.error("serve.worker_died", pid=dead[0].pid, exitcode=dead[0].exitcode)
                break
            time.sleep(0.2)
    finally:
        for child in children:
            if child.is_alive() and child.pid is not None:
                child.terminate()  # SIGTERM: graceful in aiohttp
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S + 5
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join(5)
            if child.pid is not None:
                multiproc_samples.process_exited(child.pid, metrics_dir)
        multiproc.end_group(multiproc.ProcessGroup.SERVE, metrics_dir)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else 1
