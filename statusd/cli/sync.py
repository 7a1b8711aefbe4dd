"""Sync verbs: `statusd sync status | retry-dead | drain`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.cli.common import load_settings
from statusd.db import create_engine
from statusd.errors import StatusdError
from statusd.settings import Settings

T = TypeVar("T")
console = Console()
sync_app = typer.Typer(
    name="sync", help="Main-DB sync and alert delivery (the outbox).", no_args_is_help=True
)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


def _with_engine(fn: Callable[[Settings, AsyncEngine], Awaitable[T]]) -> T:
    """An engine only (these verbs need no Redis), with sync's own one-line error format."""
    settings = load_settings()

    async def run() -> T:
        engine = create_engine(
            settings.database_url, pool_size=max(2, min(settings.sync_concurrency, 20))
        )
        try:
            return await fn(settings, engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except StatusdError as exc:  # DB down, bad config: say so, no traceback
        console.print(f"[red]{type(exc).__name__}[/]: {exc}")
        raise typer.Exit(2) from exc


@sync_app.command("status")
def status(
    output: Annotated[
        OutputFormat, typer.Option("--format", help="table or json")
    ] = OutputFormat.TABLE,
    dead: Annotated[int, typer.Option(help="How many dead letters to list")] = 20,
) -> None:
    """Outbox depth, oldest unsynced age, dead letters; whether main-DB sync is enabled."""
    from statusd.sync.outbox_dead_letters import list_dead
    from statusd.sync.status import outbox_stats

    async def gather(settings: Settings, engine: AsyncEngine) -> dict[str, Any]:
        stats = await outbox_stats(engine, settings)
        stats["dead"] = await list_dead(engine, limit=dead) if dead > 0 else []
        stats["main_api_url"] = settings.main_api_url
        return stats

    stats = _with_engine(gather)
    if output is OutputFormat.JSON:
        typer.echo(orjson.dumps(stats, option=orjson.OPT_INDENT_2, default=str).decode())
        return
    _print_table(stats)


def _print_table(stats: dict[str, Any]) -> None:
    if stats["sync"] == "disabled":
        console.print(
            "main-DB sync: [yellow]disabled[/] (STATUSD_MAIN_API_URL unset; rows are kept pending)"
        )
    else:
        console.print(f"main-DB sync: [green]enabled[/] -> {stats['main_api_url']}")
    table = Table(title="outbox")
    for column in ("target", "pending", "oldest unsynced", "dead letters"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for target, entry in stats["targets"].items():
        age = entry["oldest_age_s"]
        table.add_row(
            target, str(entry["pending"]), "-" if age is None else f"{age:.1f}s", str(entry["dead"])
        )
    console.print(table)
    console.print(f"workloads not yet synced: {stats['workloads_unsynced']}")
    if stats["dead"]:
        dead = Table(title="dead letters (replay with `statusd sync retry-dead`)")
        for column in ("id", "workload", "transition", "target", "HTTP", "response"):
            dead.add_column(column)
        for row in stats["dead"]:
            body = (row["response_body"] or row["last_error"] or "").replace("\n", " ")[:80]
            dead.add_row(
                str(row["id"]),
                row["workload_id"],
                str(row["transition_id"]),
                row["target"],
                str(row["response_status"] or "-"),
                body,
            )
        console.print(dead)


@sync_app.command("retry-dead")
def retry_dead(
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="Outbox row id (repeatable)")
    ] = None,
    workload: Annotated[
        str | None, typer.Option("--workload", help="Only this workload's dead letters")
    ] = None,
) -> None:
    """Put dead letters back in the queue (after fixing the cause) and ask a sync worker to drain."""
    from statusd.celery.drain_kick import enqueue_drain
    from statusd.sync.outbox_dead_letters import retry_dead as replay

    count = _with_engine(lambda settings, engine: replay(engine, ids=ids, workload_id=workload))
    console.print(f"{count} dead letter(s) back to pending")
    if count:
        try:
            enqueue_drain(load_settings())
            console.print("drain requested (queue sync)")
        except Exception as exc:  # no broker here: the next beat drain_due picks them up
            console.print(
                f"[yellow]could not request a drain ({type(exc).__name__}: {exc}); beat will drain them[/]"
            )


@sync_app.command("drain")
def drain_once(
    workload: Annotated[str | None, typer.Option("--workload", help="Only this workload")] = None,
    max_rows: Annotated[
        int | None, typer.Option("--max-rows", help="Stop after this many rows")
    ] = None,
) -> None:
    """Drain due outbox rows once, in this process (no worker needed), and print what happened."""
    from statusd.sync.drain import drain

    load_settings(logging=True)
    report = _with_engine(
        lambda s, engine: drain(
            engine, s, workload_ids=[workload] if workload else None, max_rows=max_rows
        )
    )
    console.print_json(orjson.dumps(report.as_dict()).decode())


def register(app: typer.Typer) -> None:
    """Add `statusd sync ...` to the statusd CLI."""
    app.add_typer(sync_app, name="sync")
