"""`statusd report availability`: the availability report (statusd.availability.breakdown) from
the database and Redis directly, with the same filters as GET /v1/reports/availability."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer
from multidict import MultiDict
from rich.table import Table

from statusd.availability import breakdown as availability
from statusd.cli.common import fail, load_settings, operator_errors, out, run_loop, with_runtime
from statusd.cli.oncall import Format
from statusd.errors import BadInput
from statusd.runtime import Runtime
from statusd.schema.bad_input import parse_query
from statusd.schema.queries import AvailabilityQuery


def _share(value: object) -> str:
    return "-" if value is None else f"{float(str(value)):.4%}"


def _table(body: dict[str, object]) -> Table:
    table = Table(title=f"availability {body['from']} .. {body['to']}")
    for name in ("workload / group", "n", "up", "down", "starting", "stopping", "unheard", "avail"):
        table.add_column(name, justify="left" if name == "workload / group" else "right")
    rows: list[tuple[str, object]] = []
    for w in body["workloads"]:  # type: ignore[attr-defined]
        rows.append((str(w["id"]), w | {"workloads": 1}))
    for g in body["groups"]:  # type: ignore[attr-defined]
        rows.append((f"[bold]{g['group'] if g['group'] is not None else '(none)'}[/]", g))
    rows.append(("[bold]total[/]", body["total"]))
    for name, fig in rows:
        assert isinstance(fig, dict)
        s = fig["seconds"]
        table.add_row(
            name,
            str(fig["workloads"]),
            *(f"{s[g]:.0f}s" for g in ("up", "down", "starting", "stopping")),
            f"{fig['unheard_s']:.0f}s",
            _share(fig["availability"]),
        )
    return table


def availability_command(
    kind: Annotated[list[str] | None, typer.Option("--kind", help="repeatable")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="key:value, repeatable")
    ] = None,
    workload_id: Annotated[list[str] | None, typer.Option("--id", help="repeatable")] = None,
    since: Annotated[
        str | None, typer.Option("--from", help="ISO 8601 with offset; default: 30 days back")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--to", help="ISO 8601 with offset; default: now")
    ] = None,
    group_by: Annotated[str | None, typer.Option("--group-by", help="kind, or label:KEY")] = None,
    fmt: Annotated[Format, typer.Option("--format")] = Format.TABLE,
) -> None:
    """Seconds per state group and availability = up / (up + down), per workload and group."""
    params: MultiDict[str] = MultiDict()
    params.extend(("kind", v) for v in kind or [])
    params.extend(("label", v) for v in label or [])
    params.extend(("id", v) for v in workload_id or [])
    for name, value in (("from", since), ("to", until), ("group_by", group_by)):
        if value is not None:
            params[name] = value
    try:
        query = parse_query(AvailabilityQuery, params)
    except BadInput as exc:
        fail(f"--{(exc.field or 'from').replace('_', '-')}: {exc}")
    window, scope = availability.query_window(query)

    async def run(rt: Runtime) -> availability.AvailabilityResult:
        return await availability.availability(
            rt.engine, rt.redis, rt.keys, window, scope, query.group_by
        )

    settings = load_settings()
    with operator_errors():
        result = run_loop(lambda: with_runtime(settings, run))
    if fmt is Format.CSV:
        sys.stdout.write(availability.to_csv(result))
        return
    body = availability.report_json(result)
    if fmt is Format.JSON:
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.print(_table(body))


def register(report: typer.Typer) -> None:
    """Add `availability` to the `statusd report` group."""
    report.command("availability")(availability_command)
