"""`statusd prune [--dry-run] [--json]`: bring every table within its retention policy now, by
hand, the way the beat task does (statusd.retention), with a live count per table and a summary."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from statusd.availability.outages import persist
from statusd.cli.common import err, load_settings, operator_errors, out, run_loop, with_runtime
from statusd.retention import PrunedTable, PruneReport, prune
from statusd.runtime import Runtime


def _summary(report: PruneReport) -> Table:
    verb = "would delete" if report.dry_run else "deleted"
    table = Table(title=f"retention: rows {verb} ({report.seconds:.1f} s)")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("batches", justify="right")
    for t in PrunedTable:
        table.add_row(t.value, str(report.rows.get(t, 0)), str(report.batches.get(t, 0)))
    return table


def prune_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would be deleted; delete nothing")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable summary")] = False,
) -> None:
    """Delete what is out of retention policy (STATUSD_RETAIN_*), in bounded batches."""
    settings = load_settings(logging=True)  # log lines to stderr: stdout is the summary
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json or not err.is_terminal,
    ) as bar:
        tasks = {t: bar.add_task(t.value, total=None) for t in PrunedTable}

        def progress(table: PrunedTable, rows: int) -> None:
            bar.update(tasks[table], completed=rows)

        async def run(rt: Runtime) -> PruneReport:
            if not dry_run:
                await persist(rt.redis, rt.keys, rt.engine)
            return await prune(rt.engine, rt.settings, dry_run=dry_run, progress=progress)

        with operator_errors():
            report = run_loop(lambda: with_runtime(settings, run))
    if as_json:
        sys.stdout.write(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.print(_summary(report))


def register(app: typer.Typer) -> None:
    """Add `prune` to the statusd CLI."""
    app.command("prune")(prune_command)
