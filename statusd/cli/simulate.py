"""`statusd simulate`: run a simulated fleet against a running statusd and check what it says.

Exit code 0 when statusd ends up agreeing with every container (its true state; UNREACHABLE or
LOST for dead, hanging and garbage-answering ones), 1 on any mismatch, 2 on bad options.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from statusd.cli.common import load_settings
from statusd.lifecycle import Kind
from statusd.simulate.control import StatusdAPI, token_from_dev_secrets
from statusd.simulate.faults import Fault, parse_faults
from statusd.simulate.fleet import Fleet, FleetConfig, FleetSummary

console = Console(stderr=True)


def _kinds(raw: str) -> tuple[Kind, ...]:
    try:
        kinds = tuple(Kind(k.strip()) for k in raw.split(",") if k.strip())
    except ValueError:
        raise typer.BadParameter(f"kinds must be among {', '.join(Kind)}") from None
    if not kinds:
        raise typer.BadParameter("at least one kind")
    return kinds


def simulate(
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Simulated containers.")] = 100,
    kinds: Annotated[str, typer.Option(help="Comma-separated kinds, assigned round-robin.")] = (
        "training,notebook,deployment"
    ),
    interval: Annotated[
        float,
        typer.Option(
            min=0.05,
            help="Heartbeat interval (s) until statusd answers with its own pace (next_heartbeat_s).",
        ),
    ] = 1.0,
    duration: Annotated[
        float, typer.Option(min=1.0, help="Length of the lifecycle walk (s).")
    ] = 30.0,
    faults: Annotated[
        str,
        typer.Option(help="Fault mix in percent: silent, dead, hang, flap, garbage, slow-start."),
    ] = "silent=5,dead=3,hang=2,flap=3,garbage=2,slow-start=3",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same fleet).")] = 0,
    settle_timeout: Annotated[
        float, typer.Option(help="After the walk, wait at most this long for statusd to agree (s).")
    ] = 120.0,
    api_url: Annotated[
        str | None, typer.Option(help="statusd API (default STATUSD_HOST:PORT).")
    ] = None,
    api_token: Annotated[
        str | None,
        typer.Option(
            help="API token (default STATUSD_API_TOKEN, else <state_dir>/dev-secrets.env)."
        ),
    ] = None,
) -> None:
    """Run N simulated workload containers on loopback against statusd, then check every state."""
    settings = load_settings()
    try:
        mix = parse_faults(faults)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from None
    token = (
        api_token
        or (settings.api_token.get_secret_value() if settings.api_token else None)
        or token_from_dev_secrets(settings.state_dir)
    )
    if not token:
        console.print(
            "[red]No API token:[/] pass --api-token, set STATUSD_API_TOKEN, or run `statusd up` "
            f"(it writes {settings.state_dir / 'dev-secrets.env'})."
        )
        raise typer.Exit(2)
    url = api_url or f"http://{settings.host}:{settings.port}"
    config = FleetConfig(
        count=count,
        kinds=_kinds(kinds),
        interval=interval,
        duration=duration,
        faults=mix,
        seed=seed,
        settle_timeout=settle_timeout,
    )
    summary = asyncio.run(_run(url, token, config))
    _print_summary(summary)
    raise typer.Exit(0 if summary.ok else 1)


async def _run(url: str, token: str, config: FleetConfig) -> FleetSummary:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        reg = progress.add_task("register", total=config.count, info="")
        walk = progress.add_task("lifecycle", total=config.duration, info="", start=False)
        settle = progress.add_task("settle", total=config.count, info="", start=False)

        def report(phase: str, info: dict[str, object]) -> None:
            if phase == "register":
                progress.update(reg, completed=int(info["done"]))  # type: ignore[call-overload]
            elif phase == "run":
                progress.start_task(walk)
                states = info["states"]
                text = " ".join(f"{k}={v}" for k, v in sorted(states.items()))  # type: ignore[attr-defined]
                progress.update(walk, completed=float(info["t"]), info=text)  # type: ignore[arg-type]
            elif phase == "settle":
                progress.start_task(settle)
                progress.update(settle, completed=int(info["ok"]), info="statusd agrees")  # type: ignore[call-overload]

        async with StatusdAPI(url, token) as api:
            fleet = Fleet(api, config, progress=report)
            console.print(
                f"simulating {config.count} containers against {url} (run {config.run_id}, "
                f"label sim-run:{config.run_id})"
            )
            await fleet.start()
            try:
                await fleet.run()
                return await fleet.settle()
            finally:
                await fleet.stop()


def _print_summary(summary: FleetSummary) -> None:
    table = Table(title=f"statusd vs truth (settled in {summary.settled_in_s:.1f}s)")
    for col in ("fault", "containers", "correct", "expected"):
        table.add_column(col)
    for fault, (total, good) in summary.by_fault().items():
        expect = (
            "UNREACHABLE or LOST" if fault in (Fault.DEAD, Fault.HANG, Fault.GARBAGE) else "truth"
        )
        style = "green" if good == total else "red"
        table.add_row(fault.value, str(total), f"[{style}]{good}[/]", expect)
    console.print(table)
    for v in summary.mismatches[:20]:
        console.print(
            f"[red]mismatch[/] {v.container.id} ({v.container.kind}, {v.container.fault}): "
            f"truth {v.truth}, expected {'/'.join(sorted(v.expected))}, statusd says {v.actual}"
        )
    if len(summary.mismatches) > 20:
        console.print(f"... and {len(summary.mismatches) - 20} more")
    console.print(
        "[green]all states correct[/]"
        if summary.ok
        else f"[red]{len(summary.mismatches)} mismatches[/]"
    )


def register(app: typer.Typer) -> None:
    """Add `simulate` to the statusd CLI."""
    app.command("simulate")(simulate)
