"""deploy/kubernetes renders with the real kustomize, and every object is valid: Kubernetes kinds
against the pinned Kubernetes API schema (strict: unknown fields fail), KEDA ScaledObjects
against the ScaledObject schema and their scalers' metadata rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.manifests import BASE, OVERLAY, render

# The oldest Kubernetes minor the manifests promise to work on (GKE/EKS regular channels).
KUBERNETES_VERSION = "1.33.0"
KEDA_SCHEMA = yaml.safe_load(
    (Path(__file__).parent / "support" / "keda_scaledobject_schema.yaml").read_text()
)
# Per scaler: metadata keys KEDA requires and the ones it knows (a typo would be ignored by
# KEDA at run time, leaving the scaler on a default). From KEDA's scaler documentation.
SCALERS: dict[str, tuple[set[str], set[str]]] = {
    "prometheus": (
        {"serverAddress", "query", "threshold"},
        {"activationThreshold", "namespace", "ignoreNullValues", "unsafeSsl", "authModes"}
        | {"customHeaders", "queryParameters"},
    ),
    "rabbitmq": (
        {"queueName", "mode", "value"},
        {"protocol", "host", "hostFromEnv", "activationValue", "vhostName", "unsafeSsl"}
        | {"timeout", "excludeUnacknowledged", "useRegex", "operation", "pageSize"},
    ),
}


@pytest.fixture(scope="module", params=["base", "overlay"])
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(BASE if request.param == "base" else OVERLAY)


def test_every_kubernetes_object_is_valid_for_the_pinned_version(
    objects: list[dict[str, Any]],
) -> None:
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Job"} <= kinds
    assert checked >= 14


def test_every_scaled_object_matches_the_keda_schema(objects: list[dict[str, Any]]) -> None:
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    assert {o["metadata"]["name"] for o in scaled} == {
        "statusd-consume",
        "statusd-worker-poll",
        "statusd-worker-sync",
    }
    for obj in scaled:
        jsonschema.validate(obj, KEDA_SCHEMA)
        spec = obj["spec"]
        assert 0 < spec["minReplicaCount"] <= spec["maxReplicaCount"], obj["metadata"]["name"]
        for trigger in spec["triggers"]:
            required, optional = SCALERS[trigger["type"]]
            keys = set(trigger["metadata"])
            assert required <= keys, f"{obj['metadata']['name']}: missing {required - keys}"
            assert keys <= required | optional, f"unknown: {keys - required - optional}"
            if trigger["type"] == "rabbitmq":
                # KEDA needs the broker address from somewhere: the env or a TriggerAuthentication.
                assert "hostFromEnv" in keys or "host" in keys or "authenticationRef" in trigger


def test_the_keda_schema_refuses_what_the_api_server_would(objects: list[dict[str, Any]]) -> None:
    """The schema subset is not a rubber stamp: the mistakes people make with ScaledObjects fail."""
    good = next(o for o in objects if o["kind"] == "ScaledObject")
    numeric_threshold = yaml.safe_load(yaml.safe_dump(good))
    numeric_threshold["spec"]["triggers"][0]["metadata"]["threshold"] = 10
    misspelled = yaml.safe_load(yaml.safe_dump(good))
    misspelled["spec"]["maxReplicas"] = misspelled["spec"].pop("maxReplicaCount")
    no_target = yaml.safe_load(yaml.safe_dump(good))
    del no_target["spec"]["scaleTargetRef"]
    for bad in (numeric_threshold, misspelled, no_target):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, KEDA_SCHEMA)


def test_kubernetes_validation_is_strict_about_unknown_fields(
    objects: list[dict[str, Any]],
) -> None:
    deployment = yaml.safe_load(
        yaml.safe_dump(next(o for o in objects if o["kind"] == "Deployment"))
    )
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
