"""The manifests use statusd as it is: every variable is a real setting and loads, every command
line parses with the real CLI, probes hit real routes, and every name one object gives another
(Secret, ConfigMap, selector, port, scale target, metric, queue) exists."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import typer
from prometheus_client import REGISTRY
from typer.testing import CliRunner

import statusd.metrics  # noqa: F401  (registers every statusd_ metric)
from statusd.app import create_app
from statusd.celery.names import QUEUES
from statusd.cli import app as cli
from statusd.ingest.streams import StreamStats
from statusd.lifecycle import Kind
from statusd.oncall.fleet_collector import FleetCollector, FleetFigures, SelfWatchFigures
from statusd.selfwatch import DisruptionMode
from statusd.settings import BrokerQueueType, Settings
from tests.conftest import TEST_API_TOKEN, TEST_SECRET
from tests.support.manifests import (
    BASE,
    OVERLAY,
    by_kind,
    container_env,
    containers,
    pod_specs,
    render,
    selects,
)

# Variables that are not statusd settings, each for a reason.
OTHER_ENV = {"PYTHONDONTWRITEBYTECODE"}  # read-only root filesystem: no .pyc writes
METRICS_PORT = 9464


def exported_metric_names() -> set[str]:
    """Every statusd_* family a process exports: the per-process registry, plus what the fleet
    collector yields at scrape time (built here from a reading with every part present)."""
    figures = FleetFigures(
        stream=StreamStats(length=1, lag=1, pending=0, consumers=1),
        outbox={"main": {"pending": 1, "oldest_age_s": 1.0, "dead": 0}},
        queues={"poll": 1},
        workloads={(Kind.TRAINING, "RUNNING"): 1},
        selfwatch=SelfWatchFigures(sweep_last_success=1.0, disruption=DisruptionMode()),
    )
    collected = [*REGISTRY.collect(), *FleetCollector(figures).collect()]
    return {m.name for m in collected if m.name.startswith("statusd_")}


STATUSD_METRICS = exported_metric_names()


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return render(OVERLAY)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(BASE)


def setting_names() -> set[str]:
    return {f"STATUSD_{name.upper()}" for name in Settings.model_fields}


def test_every_variable_is_a_statusd_setting(overlay: list[dict[str, Any]]) -> None:
    known = setting_names() | OTHER_ENV
    for where, container in containers(overlay):
        unknown = set(container_env(overlay, container)) - known
        assert not unknown, f"{where}: not statusd settings: {sorted(unknown)}"


def test_the_overlay_environment_loads_into_settings(
    overlay: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a pod would get, through the real loader: types, validators, secrets check."""
    api = next(c for where, c in containers(overlay) if where.startswith("statusd-api/"))
    for name in list(os.environ):
        if name.startswith("STATUSD_"):
            monkeypatch.delenv(name)
    for name, value in container_env(overlay, api).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    settings.require_secrets()  # long enough, not a known placeholder
    assert settings.effective_broker_url.startswith("amqp://")
    assert settings.broker_queue_type is BrokerQueueType.QUORUM
    assert settings.database_url.startswith("postgresql://")
    assert str(settings.state_dir) == "/var/lib/statusd"
    assert settings.host == "0.0.0.0" and settings.port == 8080


def test_every_referenced_configmap_and_secret_exists(overlay: list[dict[str, Any]]) -> None:
    configmaps, secrets = by_kind(overlay, "ConfigMap"), by_kind(overlay, "Secret")
    for where, container in containers(overlay):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps, where
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, where
        for var in container.get("env", []):
            ref = var.get("valueFrom", {})
            if "secretKeyRef" in ref and not ref["secretKeyRef"].get("optional"):
                assert ref["secretKeyRef"]["name"] in secrets, where
    required = {"STATUSD_SECRET", "STATUSD_API_TOKEN", "STATUSD_DATABASE_URL"}
    assert required <= set(secrets["statusd-secrets"]["stringData"])


def _argv(container: dict[str, Any]) -> list[str]:
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv[:1] == ["statusd"], f"not a statusd command: {argv}"
    return argv[1:]


def test_every_command_line_parses_with_the_real_cli(overlay: list[dict[str, Any]]) -> None:
    runner = CliRunner()
    group: Any = typer.main.get_command(cli)  # a click Group (typer may vendor click)
    verbs = set()
    for where, container in containers(overlay):
        argv = _argv(container)
        verbs.add(argv[0])
        done = runner.invoke(cli, [*argv, "--help"])
        assert done.exit_code == 0, f"{where}: `statusd {' '.join(argv)} --help`:\n{done.output}"
        # --help stops before values are converted: parse for real, without running the verb.
        command = group.get_command(group.context_class(group, info_name="statusd"), argv[0])
        assert command is not None, where
        params = command.make_context(argv[0], argv[1:]).params
        if "queues" in params:
            assert set(params["queues"].split(",")) <= set(QUEUES), where
    assert verbs == {"serve", "consume", "worker", "beat", "migrate"}


def test_one_worker_deployment_per_queue_and_exactly_one_beat(
    overlay: list[dict[str, Any]],
) -> None:
    deployments = by_kind(overlay, "Deployment")
    queues = {}
    for name, dep in deployments.items():
        argv = _argv(dep["spec"]["template"]["spec"]["containers"][0])
        if argv[0] == "worker":
            assert "--beat" not in argv and "-B" not in argv, f"{name}: beat runs on its own"
            queues[name] = argv[argv.index("--queues") + 1]
    assert sorted(queues.values()) == sorted(QUEUES)
    beats = [
        n
        for n, d in deployments.items()
        if _argv(d["spec"]["template"]["spec"]["containers"][0])[0] == "beat"
    ]
    assert beats == ["statusd-beat"] and deployments["statusd-beat"]["spec"]["replicas"] == 1


def test_http_probes_hit_real_routes_on_named_ports(overlay: list[dict[str, Any]]) -> None:
    app = create_app(Settings(secret=TEST_SECRET, api_token=TEST_API_TOKEN), consumers=0)
    get_routes = {
        r.resource.canonical
        for r in app.router.routes()
        if r.method == "GET" and r.resource is not None
    }
    probed = set()
    for where, container in containers(overlay):
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(kind)
            if probe is None:
                continue
            assert "httpGet" in probe, f"{where} {kind}: only HTTP probes are expected"
            assert probe["httpGet"]["path"] in get_routes, f"{where} {kind}"
            assert probe["httpGet"]["port"] in ports, f"{where} {kind}: no port by that name"
            probed.add((where.split("/")[0], kind, probe["httpGet"]["path"]))
    assert ("statusd-api", "livenessProbe", "/healthz") in probed
    assert ("statusd-api", "readinessProbe", "/readyz") in probed
    api_port = next(c for w, c in containers(overlay) if w.startswith("statusd-api/"))["ports"]
    assert {"name": "http", "containerPort": 8080} in api_port  # STATUSD_PORT in the ConfigMap


def test_services_and_budgets_select_exactly_one_deployment(
    overlay: list[dict[str, Any]],
) -> None:
    deployments = by_kind(overlay, "Deployment")
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selects(dep["spec"]["selector"]["matchLabels"], labels), name
    for kind, selector_of in (
        ("Service", lambda o: o["spec"]["selector"]),
        ("PodDisruptionBudget", lambda o: o["spec"]["selector"]["matchLabels"]),
    ):
        for name, obj in by_kind(overlay, kind).items():
            matched = [
                d
                for d in deployments.values()
                if selects(selector_of(obj), d["spec"]["template"]["metadata"]["labels"])
            ]
            assert len(matched) == 1, f"{kind} {name} selects {len(matched)} Deployments"
            if kind == "Service":
                pod = matched[0]["spec"]["template"]["spec"]
                names = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
                for port in obj["spec"]["ports"]:
                    assert port["targetPort"] in names, f"Service {name}: {port['targetPort']}"
    budgeted = {
        d
        for d, dep in deployments.items()
        for pdb in by_kind(overlay, "PodDisruptionBudget").values()
        if selects(
            pdb["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"]
        )
    }
    assert budgeted == set(deployments) - {"statusd-beat"}


def test_scaled_objects_target_real_deployments_metrics_and_queues(
    overlay: list[dict[str, Any]], base: list[dict[str, Any]]
) -> None:
    for objects in (base, overlay):
        deployments = by_kind(objects, "Deployment")
        for name, so in by_kind(objects, "ScaledObject").items():
            target = deployments[so["spec"]["scaleTargetRef"]["name"]]
            container = target["spec"]["template"]["spec"]["containers"][0]
            assert "replicas" in target["spec"], f"{name}: KEDA's floor needs a start value"
            for trigger in so["spec"]["triggers"]:
                meta = trigger["metadata"]
                if trigger["type"] == "prometheus":
                    metrics = set(re.findall(r"\bstatusd_[a-z_]+", meta["query"]))
                    assert metrics and metrics <= STATUSD_METRICS, f"{name}: {metrics}"
                    assert "sum(" not in meta["query"], f"{name}: fleet gauges are not additive"
                    for queue in re.findall(r'queue="([^"]+)"', meta["query"]):
                        assert queue in QUEUES, name
                elif trigger["type"] == "rabbitmq":
                    assert meta["queueName"] in QUEUES, name
                    env = container_env(objects, container) if objects is overlay else {}
                    assert meta["hostFromEnv"] in env, f"{name}: target has no such variable"
                    assert env[meta["hostFromEnv"]].startswith("amqp://"), name


def test_pods_run_unprivileged_with_a_read_only_root_and_resources(
    overlay: list[dict[str, Any]],
) -> None:
    state_dir = by_kind(overlay, "ConfigMap")["statusd-config"]["data"]["STATUSD_STATE_DIR"]
    for name, spec in pod_specs(overlay):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"], name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            for key in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][key]), name
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, name
            if name != "statusd-migrate":
                assert state_dir in mounts, f"{name}: STATUSD_STATE_DIR is not writable"


def test_metrics_ports_match_the_scrape_annotations(overlay: list[dict[str, Any]]) -> None:
    port = by_kind(overlay, "ConfigMap")["statusd-config"]["data"]["STATUSD_METRICS_PORT"]
    assert int(port) == METRICS_PORT
    for name, dep in by_kind(overlay, "Deployment").items():
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == port, name
        ports = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert {"name": "metrics", "containerPort": METRICS_PORT} in ports, name


def test_no_disruption_budget_blocks_a_node_drain(overlay: list[dict[str, Any]]) -> None:
    """minAvailable must stay below the fewest replicas a Deployment can have (KEDA's floor)."""
    floors = {
        so["spec"]["scaleTargetRef"]["name"]: so["spec"]["minReplicaCount"]
        for so in by_kind(overlay, "ScaledObject").values()
    }
    for dep_name, dep in by_kind(overlay, "Deployment").items():
        floor = floors.get(dep_name, dep["spec"]["replicas"])
        labels = dep["spec"]["template"]["metadata"]["labels"]
        for pdb in by_kind(overlay, "PodDisruptionBudget").values():
            if not selects(pdb["spec"]["selector"]["matchLabels"], labels):
                continue
            if "minAvailable" in pdb["spec"]:
                assert pdb["spec"]["minAvailable"] < floor, f"{dep_name}: a drain would block"
            else:
                assert pdb["spec"]["maxUnavailable"] >= 1, dep_name
