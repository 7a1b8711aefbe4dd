"""The monitoring pack under deploy/: alerting rules that promtool accepts and whose unit tests
pass (each alert firing on its failure and quiet on the healthy case), runbooks that exist in the
README, a Grafana dashboard, and not one metric name in either that statusd does not export:
the names are checked against scrapes of real `serve`, `consume` and `worker` processes.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.selfwatch import record_sweep_success
from statusd.settings import Settings
from tests.conftest import settings_env
from tests.support.celery_procs import broker, running_worker
from tests.support.databases import ON_CI
from tests.support.processes import running_statusd, wait_for_http
from tests.support.scrape import free_ports, get, scrape_until

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "statusd.json"
METRIC = re.compile(r"\bstatusd_[a-z0-9_]+")
# Sample suffixes of counters and histograms; the family is what a scrape declares (# TYPE).
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not installed (Debian package `prometheus`: run `make system-deps`)"
        if ON_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def named_metrics() -> dict[str, set[str]]:
    """Metric family -> where it is used ("alerts.yaml: <alert>", "statusd.json")."""
    used: dict[str, set[str]] = {}
    for rule in alerts():
        for name in METRIC.findall(rule["expr"]):
            used.setdefault(family(name), set()).add(f"alerts.yaml: {rule['alert']}")
    for expr in dashboard_exprs():
        for name in METRIC.findall(expr):
            used.setdefault(family(name), set()).add("statusd.json")
    return used


def readme_anchors() -> set[str]:
    """GitHub's heading anchors of README.md."""
    anchors, fenced = set(), False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced  # a `# comment` inside a code block is not a heading
        elif line.startswith("#") and not fenced:
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_promtool_checks_the_rules_and_their_unit_tests_pass(promtool: str) -> None:
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yaml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_is_unit_tested_firing_and_quiet_and_has_a_runbook() -> None:
    cases = yaml.safe_load((PROMETHEUS / "alerts.test.yaml").read_text())["tests"]
    evaluations = [e for case in cases for e in case["alert_rule_test"]]
    anchors = readme_anchors()
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    # The list: sweeper, ingest, stream lag, outbox age, dead letters, disruption, queue.
    for wanted in (
        "Sweeper",
        "Ingest",
        "StreamLag",
        "Outbox",
        "DeadLetters",
        "Disruption",
        "Queue",
    ):
        assert any(wanted in name for name in names), wanted
    for rule in alerts():
        name = rule["alert"]
        mine = [e for e in evaluations if e["alertname"] == name]
        assert any(e["exp_alerts"] for e in mine), f"{name}: no test where it fires"
        assert any(not e["exp_alerts"] for e in mine), f"{name}: no test where it stays quiet"
        runbook = rule["annotations"]["runbook"]
        page, _, anchor = runbook.partition("#")
        assert page == "README.md" and anchor in anchors, f"{name}: runbook {runbook} not found"


def test_dashboard_is_a_grafana_dashboard_over_a_chosen_prometheus() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] == "statusd"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    # Everything an alert watches is on the dashboard too.
    on_board = {family(n) for e in dashboard_exprs() for n in METRIC.findall(e)}
    in_alerts = {family(n) for r in alerts() for n in METRIC.findall(r["expr"])}
    assert in_alerts <= on_board, in_alerts - on_board


@pytest.fixture
def exported(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[set[str]]:
    """Metric families declared by scrapes of a real `serve`, `consume` and `worker`."""
    with broker("redis", tmp_path) as broker_url:
        api_port, *chosen = free_ports(4)  # after the broker bound its own
        ports = dict(zip(("serve", "consume", "worker"), chosen, strict=True))
        settings = make_settings(broker_url=broker_url)
        env = settings_env(settings)
        # The sweeper's success is a signal in Redis (written by a sweep; set here directly so
        # the check does not wait for one): the API process exports it once it exists.
        asyncio.run(_record_a_sweep(settings))
        api = f"http://127.0.0.1:{api_port}"
        with (
            running_statusd(
                ["serve", "--port", str(api_port)],
                env={**env, "STATUSD_METRICS_PORT": str(ports["serve"])},
                ready_url=f"{api}/readyz",
                log_dir=tmp_path,
            ),
            running_statusd(
                ["consume"],
                env={**env, "STATUSD_METRICS_PORT": str(ports["consume"])},
                log_dir=tmp_path,
            ) as consume,
            running_worker(
                {**env, "STATUSD_METRICS_PORT": str(ports["worker"])},
                tmp_path,
                queues="sweep",
                concurrency=1,
            ),
        ):
            wait_for_http(f"http://127.0.0.1:{ports['consume']}/metrics", proc=consume)
            names: set[str] = set()
            for kind, port in ports.items():
                _, body = scrape_until(f"http://127.0.0.1:{port}/metrics", lambda s: bool(s))
                declared = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", body, re.M)}
                assert declared, kind
                names |= declared
            assert get(f"{api}/metrics")[0] == 404  # STATUSD_METRICS_PORT moved it
            yield {family(n) for n in names}


async def _record_a_sweep(settings: Settings) -> None:
    redis = Redis.from_url(str(settings.redis_url))
    try:
        await record_sweep_success(redis, Keys(settings.redis_prefix), 1_700_000_000.0)
    finally:
        await redis.aclose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_metric_the_pack_names_is_exported_by_a_statusd_process(
    exported: set[str],
) -> None:
    used = named_metrics()
    assert len(used) >= 20  # the pack covers the push path, the pull path, sync and self-watch
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not missing, f"named in the pack but exported by no statusd process: {missing}"
