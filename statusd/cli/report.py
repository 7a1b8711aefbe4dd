"""`statusd report`: on-call reports, each loaded only when it is the one asked for."""

from __future__ import annotations

import typer

from statusd.cli.lazy import lazy_verbs

report_app = typer.Typer(
    name="report",
    help="On-call reports: stale workloads, fleet summary, availability.",
    no_args_is_help=True,
    cls=lazy_verbs(
        {
            "stale": "statusd.cli.oncall",
            "summary": "statusd.cli.oncall",
            "availability": "statusd.cli.availability",
        }
    ),
)


def register(app: typer.Typer) -> None:
    """Add the `report` group to the statusd CLI."""
    app.add_typer(report_app, name="report")
