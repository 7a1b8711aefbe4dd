"""CLI verbs of statusd.oncall: `statusd report stale` and `statusd report summary`.

Both read the database and Redis directly (statusd.cli.common.with_runtime, STATUSD_*
settings), so they work from any host that has those settings, even while the API is down.
`report stale` exits 0 when nothing is stale and 1 when something is (2: configuration error),
so it drops into cron and scripts; `--format json|csv` for machines, a rich table for people.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
import typer
from multidict import MultiDict
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from statusd.cli.common import fail, load_settings, operator_errors, with_runtime
from statusd.errors import BadInput
from statusd.oncall.stale_report import (
    StaleRow,
    disruption_banner,
    disruption_json,
    stale_filter,
    stale_report,
    to_csv,
)
from statusd.runtime import Runtime
from statusd.schema.bad_input import parse_query
from statusd.schema.queries import StaleQuery
from statusd.selfwatch import DisruptionMode, read_disruption

out = Console(soft_wrap=True)


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


_STYLE = {"LOST": "bold red", "UNREACHABLE": "bold yellow"}


def _table(items: list[StaleRow]) -> Table:
    table = Table(title=f"{len(items)} workload(s) need attention (worst first)")
    for name in (
        "workload",
        "kind",
        "state",
        "why",
        "silent for",
        "last seen",
        "poll fails",
        "last poll error",
        "labels",
    ):
        table.add_column(name, overflow="fold", no_wrap=name == "workload")
    for i in items:
        table.add_row(
            i.id,
            i.kind,
            f"[{_STYLE.get(i.state, '')}]{i.state}[/]" if i.state in _STYLE else i.state,
            ", ".join(
                [
                    i.reason,
                    *(["flapping"] if i.flapping else []),
                    *(["silenced"] if i.silenced else []),
                    *([f"suppressed by {i.suppressed_by}"] if i.suppressed_by else []),
                ]
            ),
            _age(i.stale_for_s),
            i.last_seen_at or "never",
            str(i.poll_failures),
            i.last_poll_error or "",
            " ".join(f"{k}={v}" for k, v in sorted(i.labels.items())),
        )
    return table


def stale(
    kind: Annotated[
        list[str] | None, typer.Option("--kind", help="training|notebook|deployment (repeatable)")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="key:value, repeatable (all must match)")
    ] = None,
    older_than: Annotated[
        str, typer.Option("--older-than", help="minimum silence: 300, 90s, 5m, 1h")
    ] = "0",
    fmt: Annotated[
        Format, typer.Option("--format", help="table for people, json/csv for scripts")
    ] = Format.TABLE,
) -> None:
    """Stale, UNREACHABLE and LOST workloads, worst first. Exit 1 when there is any, 0 when none."""
    try:
        # The same query model as GET /v1/reports/stale: one rule for kinds, labels, durations.
        params: MultiDict[str] = MultiDict(older_than=older_than)
        params.extend(("kind", v) for v in kind or [])
        params.extend(("label", v) for v in label or [])
        flt = stale_filter(parse_query(StaleQuery, params))
    except BadInput as exc:
        option = f"--{exc.field or 'older_than'}".replace("_", "-")
        fail(f"{option}: {exc}")

    async def run(rt: Runtime) -> tuple[list[StaleRow], DisruptionMode]:
        items = await stale_report(rt.settings, rt.engine, rt.redis, rt.keys, flt)
        return items, await read_disruption(rt.redis, rt.keys)

    settings = load_settings()
    with operator_errors():
        items, disruption = asyncio.run(with_runtime(settings, run))
    banner = disruption_banner(disruption)
    if fmt is Format.JSON:
        body = {
            "items": [i.as_dict() for i in items],
            "count": len(items),
            "generated_at": datetime.now(UTC).isoformat(),
            "disruption": disruption_json(disruption),
        }
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt is Format.CSV:
        if banner:  # stdout stays pure CSV for the scripts that read it
            sys.stderr.write(banner + "\n")
        sys.stdout.write(to_csv(items))
    else:
        if banner:
            out.print(f"[bold white on red] {escape(banner)} [/]")
        if items:
            out.print(_table(items))
        else:
            out.print("[green]Nothing is stale.[/]")
    raise typer.Exit(1 if items else 0)


def summary(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Workloads per kind x state, stale counts, sync backlog, heartbeat stream lag, queue depths."""
    from statusd.oncall.summary import fleet_summary

    settings = load_settings()
    with operator_errors():
        data = asyncio.run(with_runtime(settings, fleet_summary)).model_dump(mode="json")
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    _print_summary(data)


def _print_summary(data: dict[str, Any]) -> None:
    counts: dict[str, dict[str, int]] = data["counts"]
    states = sorted({s for by_state in counts.values() for s in by_state})
    table = Table(title="Workloads per kind x state")
    table.add_column("kind")
    for s in states:
        table.add_column(s, justify="right", style=_STYLE.get(s))
    table.add_column("total", justify="right")
    for kind, by_state in counts.items():
        table.add_row(kind, *(str(by_state.get(s, 0)) for s in states), str(sum(by_state.values())))
    out.print(table)
    stale = data["stale"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(stale["by_reason"].items())) or "none"
    out.print(f"stale: [bold]{stale['total']}[/] ({reasons})")
    sync = data["sync"]
    oldest = sync.get("oldest_unsynced_age_s")
    out.print(
        f"sync backlog: {sync.get('depth')} pending"
        + (f", oldest {_age(oldest)}" if oldest is not None else "")
        + f", {sync.get('dead_letters')} dead"
        + (f" (sync {sync['sync']})" if "sync" in sync else "")
    )
    stream = data["stream"]
    out.print(
        f"heartbeat stream: {stream['length']} entries, lag {stream['lag']}, "
        f"pending {stream['pending']}, consumers {stream['consumers']}"
    )
    if data.get("celery_queues") is not None:
        out.print(
            "celery queues: " + ", ".join(f"{q} {n}" for q, n in data["celery_queues"].items())
        )


def register(app: typer.Typer) -> None:
    """Add `stale` and `summary` to the `statusd report` group."""
    app.command("stale")(stale)
    app.command("summary")(summary)
