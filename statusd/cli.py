"""`statusd` command line. Each area registers its own verbs; this module only assembles them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="statusd",
    help="statusd: the true state of trainings, notebooks and deployments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    from statusd.commands import register_foundation
    from statusd.ingest.commands import register as register_ingest
    from statusd.oncall.commands import register as register_oncall
    from statusd.sweeper.commands import register as register_sweeper
    from statusd.sync.commands import register as register_sync

    register_foundation(app)  # up, serve, migrate, workloads
    register_ingest(app)  # consume, dead-letters
    register_sweeper(app)  # worker, beat, simulate
    register_sync(app)  # sync status / retry-dead
    register_oncall(app)  # report stale / summary


_register()


def main() -> None:
    app()
