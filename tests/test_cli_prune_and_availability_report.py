"""`statusd prune` and `statusd report availability` as real subprocesses against a real
database (SQLite and PostgreSQL): the dry run counts, the prune deletes and summarises per
table, and the report gives the same figures before and after."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from statusd.db import create_engine
from statusd.settings import Settings
from tests.conftest import settings_env
from tests.support.processes import run_statusd
from tests.test_retention_prunes_within_policy import POLICY, days_ago, seed


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_statusd(args, env)


async def test_prune_and_report_from_the_command_line(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(**POLICY)
    engine = create_engine(settings.database_url)
    try:
        await seed(engine)
    finally:
        await engine.dispose()
    env = {**settings_env(settings), "COLUMNS": "200"}
    window = ["--from", days_ago(90).isoformat(), "--to", days_ago(0).isoformat()]
    report = ["report", "availability", *window, "--group-by", "kind", "--format", "json"]

    before = run(report, env)
    assert before.returncode == 0, before.stderr
    dry = run(["prune", "--dry-run", "--json"], env)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["tables"]["transitions"]["rows"] == 9
    table = run(["prune"], env)
    assert table.returncode == 0, table.stderr
    assert "rows deleted" in table.stdout and "transitions" in table.stdout
    assert "refused_observations" in table.stdout and " 13 " in table.stdout
    after = run(report, env)
    assert json.loads(after.stdout) == json.loads(before.stdout)
    assert {w["id"] for w in json.loads(after.stdout)["workloads"]} >= {"gone-old", "done-old"}

    people = run(["report", "availability", *window, "--group-by", "label:team"], env)
    assert people.returncode == 0 and "vision" in people.stdout and "total" in people.stdout
    bad = run(["report", "availability", "--from", "last tuesday"], env)
    assert bad.returncode == 2 and "--from" in bad.stderr
