"""compose.yaml has the production shape (no Docker engine here, so the file itself is checked)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from statusd.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text()))


def command_of(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def statusd_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if command_of(s).startswith("statusd ")}


def test_services_and_roles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "postgres"} <= set(services)
    roles = {command_of(s) for s in statusd_services(compose).values()}
    assert "statusd migrate" in roles and "statusd beat" in roles
    assert any(r.startswith("statusd serve") for r in roles)
    worker = next(r for r in roles if r.startswith("statusd worker"))
    assert "sweep,poll,sync" in worker
    api = next(s for s in services.values() if command_of(s).startswith("statusd serve"))
    api_count = sum(1 for s in services.values() if command_of(s).startswith("statusd serve"))
    assert api_count * int(api.get("deploy", {}).get("replicas", 1)) >= 2  # statusd API x2


def test_redis_is_durable_and_never_evicts(compose: dict[str, Any]) -> None:
    command = command_of(compose["services"]["redis"])
    assert re.search(r"--appendonly\s+yes", command)
    assert re.search(r"--maxmemory-policy\s+noeviction", command)
    assert "redis-cli" in " ".join(compose["services"]["redis"]["healthcheck"]["test"])
    assert "pg_isready" in " ".join(compose["services"]["postgres"]["healthcheck"]["test"])


def test_api_has_a_healthz_check_and_everything_waits_for_migrate(compose: dict[str, Any]) -> None:
    for name, service in statusd_services(compose).items():
        if command_of(service).startswith("statusd serve"):
            assert "/healthz" in " ".join(service["healthcheck"]["test"]), name
        if name != "statusd-migrate" and command_of(service) != "statusd migrate":
            depends = service["depends_on"]
            migrate = next(
                n for n, s in compose["services"].items() if command_of(s) == "statusd migrate"
            )
            assert depends[migrate]["condition"] == "service_completed_successfully", name
            assert depends["redis"]["condition"] == "service_healthy", name
            assert depends["postgres"]["condition"] == "service_healthy", name


def test_statusd_variables_exist_in_settings_and_secrets_are_required(
    compose: dict[str, Any],
) -> None:
    text = (ROOT / "compose.yaml").read_text()
    known = {f"STATUSD_{name.upper()}" for name in Settings.model_fields}
    used = set(re.findall(r"\bSTATUSD_[A-Z0-9_]+\b", text)) - {
        "STATUSD_IMAGE"
    }  # image tag, not a setting
    assert used, "compose.yaml sets no STATUSD_ variables"
    assert used <= known, f"not Settings fields: {sorted(used - known)}"
    for service in statusd_services(compose).values():
        env = service["environment"]
        for required in (
            "STATUSD_DATABASE_URL",
            "STATUSD_REDIS_URL",
            "STATUSD_SECRET",
            "STATUSD_API_TOKEN",
        ):
            assert required in env
        assert env["STATUSD_DATABASE_URL"].startswith("postgresql://")
        # secrets must come from the operator: ${VAR:?message} makes compose refuse to start without them
        for secret in ("STATUSD_SECRET", "STATUSD_API_TOKEN"):
            assert re.fullmatch(rf"\$\{{{secret}:\?[^}}]*\}}", env[secret]), env[secret]
