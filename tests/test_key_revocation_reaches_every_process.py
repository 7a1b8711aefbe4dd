"""A revoked key is refused by every `serve` process within 5 s, whichever process (or the CLI)
revoked it; `statusd keys` and `statusd audit` work against the same database."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.processes import free_port, run_statusd, running_statusd

REVOCATION_BOUND_S = 5.0  # what operators are promised; STATUSD_KEY_CACHE_TTL is set below it


def call(url: str, method: str, path: str, token: str, body: object = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@contextlib.contextmanager
def two_servers(settings: Settings, log_dir: Path) -> Iterator[list[str]]:
    urls = []
    with contextlib.ExitStack() as stack:
        for _ in range(2):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(
                running_statusd(
                    ["serve", "--host", "127.0.0.1", "--port", str(port)],
                    env=settings_env(settings),
                    ready_url=f"{url}/readyz",
                    log_dir=log_dir,
                )
            )
            urls.append(url)
        yield urls


def refused_everywhere_within(urls: list[str], key: str, bound_s: float) -> float:
    """Seconds until every server answered 401 to `key` (AssertionError past `bound_s`)."""
    started = time.monotonic()
    pending = set(urls)
    while pending:
        pending = {u for u in pending if call(u, "GET", "/v1/workloads", key)[0] != 401}
        elapsed = time.monotonic() - started
        assert elapsed <= bound_s, f"still accepted by {sorted(pending)} after {elapsed:.1f}s"
        if pending:
            time.sleep(0.1)
    return time.monotonic() - started


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_statusd(args, {**settings_env(settings), "COLUMNS": "200"})


def test_a_revoked_key_is_refused_by_both_processes_within_5_s(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(key_cache_ttl=2.0)
    with two_servers(settings, tmp_path) as (a, b):
        by_api = call(a, "POST", "/v1/keys", TEST_API_TOKEN, {"name": "laptop", "scope": "read"})
        assert by_api[0] == 201
        made = cli(settings, "keys", "create", "--name", "grafana", "--scope", "read", "--json")
        assert made.returncode == 0, made.stderr
        by_cli = json.loads(made.stdout)
        for key in (by_api[1]["key"], by_cli["key"]):
            for url in (a, b):  # both processes have looked the key up (and cached it)
                assert call(url, "GET", "/v1/workloads", key)[0] == 200

        status, revoked = call(a, "DELETE", f"/v1/keys/{by_api[1]['id']}", TEST_API_TOKEN)
        assert status == 200 and revoked["revoked_at"]
        refused_everywhere_within([a, b], by_api[1]["key"], REVOCATION_BOUND_S)

        gone = cli(settings, "keys", "revoke", by_cli["id"])
        assert gone.returncode == 0, gone.stderr
        refused_everywhere_within([a, b], by_cli["key"], REVOCATION_BOUND_S)

        listed = cli(settings, "keys", "list", "--json")
        states = {k["name"]: k["revoked_at"] is not None for k in json.loads(listed.stdout)}
        assert states == {"laptop": True, "grafana": True}
        assert by_cli["key"] not in listed.stdout

        trail = cli(settings, "audit", "--json")
        assert trail.returncode == 0, trail.stderr
        rows = [json.loads(line) for line in trail.stdout.splitlines()]
        assert [(r["actor_id"], r["action"], r["target"], r["outcome"]) for r in rows] == [
            ("bootstrap", "key.create", by_api[1]["id"], 201),
            ("cli", "key.create", by_cli["id"], 201),
            ("bootstrap", "key.revoke", by_api[1]["id"], 200),
            ("cli", "key.revoke", by_cli["id"], 200),
        ]
        status, page = call(b, "GET", "/v1/audit", TEST_API_TOKEN)
        assert status == 200 and [r["id"] for r in page["items"]] == [r["id"] for r in rows]


def test_the_cli_refuses_bad_input_with_one_line(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    for args, needle in (
        (["keys", "create", "--name", "x", "--scope", "root"], "scope"),
        (["keys", "create", "--name", "x", "--scope", "read", "--expires-in", "2w"], "expires-in"),
        (["keys", "create", "--name", "x", "--scope", "read", "--label", "team"], "--label"),
        (["keys", "revoke", "nope"], "no key"),
        (["audit", "--since", "yesterday"], "--since"),
    ):
        done = cli(settings, *args)
        assert done.returncode != 0, args
        assert needle in done.stderr + done.stdout, (args, done.stderr)
        assert "Traceback" not in done.stderr
