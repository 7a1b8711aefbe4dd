"""Every route of GET /v1/openapi.json, driven with generated input by schemathesis: never a 5xx,
and never a content type the document does not declare for that status.

A real `statusd serve` on loopback, on each database. The routes come from the served document
(not a hand-kept list), so a route added later is driven too; an empty document fails. For each
operation: schema-conforming cases (positive) and schema-violating ones (negative), with the API
token, plus a pass with `{id}` fixed to a registered workload so the deeper paths run. Afterwards
the server's log must not hold one `api.unhandled` (an unexpected exception answered 500).
Every answer with a body is checked twice for its content type: by schemathesis's own
`content_type_conformance`, and strictly (a documented status whose answer has a body must
declare that body's media type, and an answer's status must be documented).
The number of requests sent is printed and written to artifacts/generated-input-<db>.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable

from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.processes import free_port, running_statusd

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
EXAMPLES = 8  # per operation and mode: a few hundred requests per database, well under a minute
KNOWN_ID = "gen-known"
AUTH = {"Authorization": f"Bearer {TEST_API_TOKEN}"}


@dataclass
class Tally:
    sent: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    undocumented: list[str] = field(default_factory=list)

    def record(self, line: str, status: int, undocumented: str | None) -> None:
        self.sent += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if status >= 500:
            self.server_errors.append(line)
        if undocumented is not None:
            self.undocumented.append(f"{line}: {undocumented}")


def undocumented_answer(operation: Any, case: Any, response: Any) -> str | None:
    """What the document does not declare about this answer (None: all of it is declared)."""
    from schemathesis.specs.openapi.checks import content_type_conformance

    try:
        case.validate_response(response, checks=[content_type_conformance])
    except BaseExceptionGroup as exc:  # schemathesis's FailureGroup: its text names each failure
        return f"schemathesis: {exc}"
    status = str(response.status_code)
    documented = operation.definition.raw.get("responses", {}).get(status)
    if documented is None:
        return f"status {status} is not documented"
    media = response.headers.get("Content-Type", "").split(";")[0].strip()
    if not media or not response.content:
        return None
    declared = set(documented.get("content", {}))
    if media in declared:
        return None
    return f"{status} answered {media}, declared {sorted(declared) or 'no content'}"


@pytest.fixture
def served(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real `statusd serve` (no consumers: nothing here needs heartbeats applied)."""
    port = free_port()
    settings = make_settings(port=port, consumers=0, events_ping_interval=0.5)
    base = f"http://127.0.0.1:{port}"
    with running_statusd(
        ["serve", "--port", str(port)],
        env=settings_env(settings),
        ready_url=f"{base}/healthz",
        log_dir=tmp_path,
    ) as proc:
        registered = requests.post(
            f"{base}/v1/workloads", json={"id": KNOWN_ID, "kind": "training"}, headers=AUTH
        )
        assert registered.status_code == 201, registered.text
        yield base, proc.log_path


def streams(operation: Any) -> bool:
    """True for an endpoint that answers text/event-stream (never ends: read it briefly)."""
    responses = operation.definition.raw.get("responses", {})
    return any("text/event-stream" in r.get("content", {}) for r in responses.values())


def drive(operation: Any, base: str, tally: Tally, **fixed: Any) -> None:
    """Send generated cases of one operation, counting them; 5xx are collected, not raised."""
    from schemathesis import GenerationMode

    timeout = 1.0 if streams(operation) else 10.0
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=operation.as_strategy(generation_mode=mode, **fixed))
        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same cases every run: a failure reproduces
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def send(case: Any) -> None:
            response = case.call(base_url=base, headers=AUTH, timeout=timeout)
            tally.record(
                f"{case.as_curl_command(headers=AUTH)} -> {response.status_code}",
                response.status_code,
                undocumented_answer(operation, case, response),
            )

        try:
            send()
        except Unsatisfiable:
            pass  # nothing can violate this operation's schema (e.g. no parameters): fine


def test_generated_input_never_gets_a_server_error(
    served: tuple[str, Path], database_url: str
) -> None:
    # schemathesis is imported here, not at collection: every xdist worker collects this module,
    # and it is the heaviest import of the suite (its pytest plugin is off: see pyproject.toml).
    import schemathesis

    base, server_log = served
    schema = schemathesis.openapi.from_url(f"{base}/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the OpenAPI document lists no routes"
    tally = Tally()
    for operation in operations:
        drive(operation, base, tally)
        if "{id}" in operation.path:
            drive(operation, base, tally, path_parameters={"id": KNOWN_ID})
    backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
    summary = {
        "database": backend,
        "operations": len(operations),
        "requests": tally.sent,
        "by_status": dict(sorted(tally.by_status.items())),
        "server_errors": len(tally.server_errors),
        "undocumented_content_types": len(tally.undocumented),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"generated-input-{backend}.json").write_text(json.dumps(summary, indent=2))
    print(f"\ngenerated input, {backend}: {json.dumps(summary)}")
    assert tally.sent >= len(operations) * EXAMPLES, summary
    assert not tally.server_errors, "\n".join(tally.server_errors[:20])
    assert not tally.undocumented, "\n".join(tally.undocumented[:20])
    log = server_log.read_text(errors="replace")
    assert "api.unhandled" not in log and "Traceback" not in log, log[-4000:]
