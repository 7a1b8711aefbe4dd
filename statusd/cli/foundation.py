"""Foundation verbs: serve, migrate, workloads list/show, lifecycle."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from statusd.cli.common import load_settings, operator_errors, out, with_runtime
from statusd.errors import ConfigError, is_transient
from statusd.logs import configure_logging
from statusd.runtime import Runtime
from statusd.schema.bad_input import parse_query
from statusd.schema.queries import WorkloadQuery

# -- migrate --------------------------------------------------------------------------------------


def alembic_ini() -> Path:
    """alembic.ini beside the package (source checkout / editable install), else in the cwd."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "alembic.ini",
        Path.cwd() / "alembic.ini",
    ):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "alembic.ini not found next to the statusd package or in the current directory"
    )


def run_migrations(database_url: str) -> None:
    """`alembic upgrade head` on `database_url`; ConfigError naming the database if unreachable."""
    from alembic import command
    from alembic.config import Config

    from statusd.db import display_url, normalize_url, sqlite_path

    url = normalize_url(database_url)
    path = sqlite_path(url)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    config = Config(str(alembic_ini()))
    config.attributes["database_url"] = database_url
    try:
        command.upgrade(config, "head")
    except Exception as exc:
        if is_transient(exc):  # OSErrors (a socket refused, a file) included
            shown = display_url(database_url)
            raise ConfigError(
                f"cannot reach the database {shown} to migrate it ({type(exc).__name__}: {exc}). "
                "Check STATUSD_DATABASE_URL and that the server is up."
            ) from exc
        raise


def migrate() -> None:
    """Create or upgrade the database schema (Alembic upgrade head) on STATUSD_DATABASE_URL."""
    settings = load_settings()
    with operator_errors():
        run_migrations(settings.database_url)
    out.print("[green]database schema is up to date[/]")


# -- serve ----------------------------------------------------------------------------------------


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (STATUSD_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (STATUSD_PORT).")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes sharing the port (SO_REUSEPORT).")
    ] = 1,
    consumers: Annotated[
        int | None,
        typer.Option(min=0, help="Heartbeat consumer tasks per process (STATUSD_CONSUMERS)."),
    ] = None,
) -> None:
    """Run the HTTP API (status API, heartbeat ingest, on-call endpoints) and stream consumers."""
    from statusd.runtime import redis_url_or_fail
    from statusd.serving import serve as run

    settings = load_settings(host=host, port=port)
    with operator_errors():
        settings.require_secrets()
        redis_url_or_fail(settings)  # fail now with the fix, not inside the server's startup
    configure_logging(settings)
    with operator_errors():
        code = run(settings, workers=workers, consumers=consumers)
    raise typer.Exit(code)


# -- workloads ------------------------------------------------------------------------------------

workloads_app = typer.Typer(
    help="Look at registered workloads from the terminal.", no_args_is_help=True
)


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


@workloads_app.command("list")
def workloads_list(
    kind: Annotated[str | None, typer.Option(help="training, notebook or deployment.")] = None,
    state: Annotated[str | None, typer.Option(help="e.g. RUNNING.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="key:value, repeatable.")] = None,
    stale: Annotated[
        bool | None, typer.Option("--stale/--fresh", help="Only stale / fresh.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """List workloads (same filters as GET /v1/workloads)."""
    from multidict import MultiDict

    from statusd.api.workloads import list_page

    params: MultiDict[str] = MultiDict(limit=str(limit))
    for name, value in (("kind", kind), ("state", state)):
        if value is not None:
            params.add(name, value)
    if stale is not None:
        params.add("stale", "true" if stale else "false")
    for pair in label or []:
        params.add("label", pair)
    settings = load_settings()
    with operator_errors():
        query = parse_query(WorkloadQuery, params)
        items, next_cursor = asyncio.run(with_runtime(settings, lambda rt: list_page(rt, query)))
    if as_json:
        _print_json({"items": items, "next_cursor": next_cursor})
        return
    table = Table(
        "id", "kind", "state", "stale", "last seen", "labels", title=f"{len(items)} workloads"
    )
    for item in items:
        labels = ", ".join(f"{k}={v}" for k, v in item["labels"].items())
        table.add_row(
            item["id"],
            item["kind"],
            item["state"],
            "yes" if item["stale"] else "",
            item["last_seen_at"] or "never",
            labels,
        )
    out.print(table)
    if next_cursor:
        out.print(f"[dim]more: raise --limit or use the API with cursor={next_cursor}[/]")


@workloads_app.command("show")
def workloads_show(
    workload_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
) -> None:
    """Show one workload and its history."""
    from sqlalchemy import select

    from statusd.api.serializers import transition_json
    from statusd.api.workloads import load_workload
    from statusd.db import reading
    from statusd.models import TransitionRow

    t = TransitionRow.__table__  # type: ignore[attr-defined]

    async def work(rt: Runtime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        workload = await load_workload(rt, workload_id)
        async with reading(rt.engine) as conn:
            rows = await conn.execute(
                select(t).where(t.c.workload_id == workload_id).order_by(t.c.id)
            )
            return workload, [transition_json(dict(r._mapping)) for r in rows]

    settings = load_settings()
    with operator_errors():
        workload, history = asyncio.run(with_runtime(settings, work))
    if as_json:
        _print_json({**workload, "transitions": history})
        return
    for key, value in workload.items():
        out.print(f"[bold]{key}[/]: {value}", highlight=False)
    table = Table("id", "from", "to", "source", "reason", "seq", "recorded at", title="history")
    for item in history:
        table.add_row(
            str(item["id"]),
            item["from"],
            item["to"],
            item["source"],
            item["reason"] or "",
            "" if item["seq"] is None else str(item["seq"]),
            item["recorded_at"],
        )
    out.print(table)


# -- lifecycle ------------------------------------------------------------------------------------


def lifecycle() -> None:
    """Print each kind's transition table (what may follow what)."""
    from statusd.lifecycle import CONTACT_STATES, FINAL_STATES, Kind, allowed_moves

    for kind in Kind:
        table = Table("from", "may move to", title=f"{kind.value}")
        for state, targets in allowed_moves(kind).items():
            note = " (final)" if state in FINAL_STATES else ""
            note += " (sweeper only)" if state in CONTACT_STATES else ""
            table.add_row(
                f"{state.value}{note}", ", ".join(sorted(t.value for t in targets)) or "-"
            )
        out.print(table)


def register(app: typer.Typer) -> None:
    """Add serve, migrate, workloads and lifecycle to the statusd CLI."""
    app.command("serve")(serve)
    app.command("migrate")(migrate)
    app.add_typer(workloads_app, name="workloads")
    app.command("lifecycle")(lifecycle)
