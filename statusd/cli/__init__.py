"""`statusd` command line: one package, one verb module per area, sharing statusd.cli.common.

Every verb loads its settings with `common.load_settings` (a bad environment is one error line,
exit code 2) and opens what it needs with `common.with_runtime`. This module only names which
module registers each verb: a process imports the area of the verb it runs, not all of them.
"""

from __future__ import annotations

import gc

import typer

from statusd.cli.lazy import lazy_verbs

VERBS = {
    "up": "statusd.cli.up",
    "serve": "statusd.cli.foundation",
    "migrate": "statusd.cli.foundation",
    "lifecycle": "statusd.cli.foundation",
    "consume": "statusd.cli.ingest",
    "worker": "statusd.cli.worker",
    "beat": "statusd.cli.worker",
    "simulate": "statusd.cli.simulate",
    "audit": "statusd.cli.keys_and_audit",
    "prune": "statusd.cli.prune",
    "workloads": "statusd.cli.foundation",
    "dead-letters": "statusd.cli.ingest",
    "sync": "statusd.cli.sync",
    "report": "statusd.cli.report",
    "keys": "statusd.cli.keys_and_audit",
}

app = typer.Typer(
    name="statusd",
    help="statusd: the true state of trainings, notebooks and deployments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=lazy_verbs(VERBS),
)


@app.callback()
def statusd() -> None:
    # A callback makes typer build a group even though no verb is registered on `app` itself.
    pass


# Starting a statusd process creates ~150,000 long-lived objects (modules, classes, SQLAlchemy and
# pydantic metadata). At the default first-generation threshold (700) the cyclic collector runs
# ~320 times while they are imported, re-scanning survivors each time: ~12% of start-up CPU. A
# threshold of 50,000 runs it a few times; the garbage cycles it lets wait are a few MB at most.
GC_GEN0_THRESHOLD = 50_000


def main() -> None:
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    app()
