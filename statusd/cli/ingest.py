"""Ingest verbs: `consume` and `dead-letters list|replay`."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from typing import Annotated

import typer

from statusd.cli.common import load_settings, run_loop, with_runtime
from statusd.runtime import Runtime

dead_letters_app = typer.Typer(
    help="Heartbeat entries that kept failing: list them, replay them.", no_args_is_help=True
)


def consume(
    consumers: Annotated[
        int | None,
        typer.Option(
            "--consumers",
            "-n",
            min=1,
            help="Consumers in this process, each holding a share of the stream shards (default STATUSD_CONSUMERS, at least 1).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Consumer name prefix (default host:pid), as seen in the consumer group and the logs.",
        ),
    ] = None,
) -> None:
    """Apply heartbeats from the stream (no HTTP); stops cleanly on SIGTERM/SIGINT.

    With STATUSD_METRICS_PORT set, serves this process's /metrics there."""
    from contextlib import AsyncExitStack

    from statusd.ingest.consumer import ConsumerSet
    from statusd.oncall.metrics_endpoint import metrics_listener
    from statusd.recovery import ensure_liveness_at_start

    settings = load_settings(logging=True)

    async def work(runtime: Runtime) -> None:
        consumer_set = ConsumerSet(
            runtime, count=consumers or max(1, settings.consumers), name=name
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await ensure_liveness_at_start(runtime)
        async with AsyncExitStack() as listeners:
            if settings.metrics_port is not None:  # its own figures only: the fleet's are serve's
                await listeners.enter_async_context(
                    metrics_listener(settings, runtime, with_fleet=False)
                )
            await consumer_set.ensure_groups()
            consumer_set.start()
            await stop.wait()
            await consumer_set.stop()  # before the runtime closes the pools the consumers use

    run_loop(lambda: with_runtime(settings, work, redis_max_connections=None))


@dead_letters_app.command("list")
def list_cmd(
    count: Annotated[
        int, typer.Option("--count", min=1, help="Show at most this many (oldest first).")
    ] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of a table.")
    ] = False,
) -> None:
    """Show dead letters: id, workload, status, seq, deliveries, error."""
    from rich.console import Console
    from rich.table import Table

    from statusd.ingest.stream_dead_letters import list_dead_letters

    settings = load_settings(logging=True)
    letters = run_loop(
        lambda: with_runtime(
            settings,
            lambda rt: list_dead_letters(rt.redis, rt.keys, count=count),
            redis_max_connections=None,
        )
    )
    if as_json:
        import dataclasses
        import sys

        import orjson

        for letter in letters:
            sys.stdout.write(orjson.dumps(dataclasses.asdict(letter)).decode() + "\n")
        return
    table = Table(title=f"dead letters ({len(letters)})")
    for column in (
        "id",
        "original id",
        "dead at",
        "workload",
        "status",
        "seq",
        "deliveries",
        "error",
    ):
        table.add_column(column)
    for letter in letters:
        dead_at = datetime.fromtimestamp(letter.dead_at_ms / 1000, UTC).isoformat(
            timespec="seconds"
        )
        table.add_row(
            letter.id,
            letter.original_id,
            dead_at,
            letter.fields.get("workload_id", "?"),
            letter.fields.get("status", "?"),
            letter.fields.get("seq", "?"),
            str(letter.deliveries),
            letter.error,
        )
    Console().print(table)


@dead_letters_app.command("replay")
def replay_cmd(
    entry_id: Annotated[
        str | None, typer.Option("--id", help="Replay only this dead letter (default: all).")
    ] = None,
) -> None:
    """Append dead letters to their workload's shard stream again (consumers judge them by seq)."""
    from rich.console import Console

    from statusd.ingest.stream_dead_letters import replay

    settings = load_settings(logging=True)
    new_ids = run_loop(
        lambda: with_runtime(
            settings,
            lambda rt: replay(rt.redis, rt.keys, shards=settings.stream_shards, entry_id=entry_id),
            redis_max_connections=None,
        )
    )
    if entry_id is not None and not new_ids:
        Console(stderr=True).print(f"[red]no dead letter with id {entry_id}[/red]")
        raise typer.Exit(1)
    Console().print(f"replayed {len(new_ids)} dead letter(s)")


def register(app: typer.Typer) -> None:
    """Add this area's verbs to the statusd CLI."""
    app.command("consume")(consume)
    app.add_typer(dead_letters_app, name="dead-letters")
