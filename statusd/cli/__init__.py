"""`statusd` command line: one package, one verb module per area, sharing statusd.cli.common.

Every verb loads its settings with `common.load_settings` (a bad environment is one error line,
exit code 2) and opens what it needs with `common.with_runtime`; this module only assembles them.
"""

from __future__ import annotations

import typer

from statusd.cli import (
    availability,
    foundation,
    ingest,
    keys_and_audit,
    oncall,
    prune,
    simulate,
    sync,
    up,
    worker,
)

app = typer.Typer(
    name="statusd",
    help="statusd: the true state of trainings, notebooks and deployments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

up.register(app)  # up
foundation.register(app)  # serve, migrate, workloads, lifecycle
ingest.register(app)  # consume, dead-letters
worker.register(app)  # worker, beat
simulate.register(app)  # simulate
sync.register(app)  # sync status / retry-dead / drain
oncall.register(app)  # report stale / summary
keys_and_audit.register(app)  # keys create / list / revoke, audit
availability.register(oncall.report_app)  # report availability
prune.register(app)  # prune


def main() -> None:
    app()
