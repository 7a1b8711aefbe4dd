"""Rotating STATUSD_SECRET: tokens and session cookies signed with a previous secret still verify,
a heartbeat on one is answered with a fresh token, statusd-client switches to it, and once the
previous secret is dropped only tokens that never refreshed are refused."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from statusd import tokens
from statusd.api import sessions
from statusd.errors import BadInput
from statusd.ingest import heartbeat_checks
from statusd.lifecycle import Kind
from statusd.settings import Settings
from tests.conftest import settings_env
from tests.support.api_client import api_client
from tests.support.client_stack import PlatformAPI, wait_for
from tests.support.processes import (
    ManagedProcess,
    free_port,
    running_statusd,
    start_process,
    stop_process,
    wait_for_log,
)

OLD = b"old-secret-" + b"o" * 32
NEW = b"new-secret-" + b"n" * 32


def test_a_token_signed_with_a_previous_secret_verifies_and_says_so() -> None:
    heartbeat_checks._verified.cache_clear()
    old = tokens.issue(OLD, "dep-1", Kind.DEPLOYMENT, 4)
    rotating = (NEW, OLD)
    for _ in range(2):  # verified, then recognized from the cache: both say "renew me"
        claims = heartbeat_checks.claims_from_token(old, rotating)
        assert claims.signed_by_previous and (claims.workload_id, claims.generation) == ("dep-1", 4)
    fresh = tokens.reissue(NEW, claims)
    assert not heartbeat_checks.claims_from_token(fresh, rotating).signed_by_previous
    assert not heartbeat_checks.claims_from_token(fresh, (NEW,)).signed_by_previous
    with pytest.raises(BadInput) as refused:  # the previous secret dropped: the old one is out
        heartbeat_checks.claims_from_token(old, (NEW,))
    assert refused.value.status == 401


def test_a_session_cookie_signed_with_a_previous_secret_still_counts() -> None:
    cookie = sessions.SessionCookie("abc", int(time.time()) + 60)
    value = sessions.encode(OLD, cookie)
    assert sessions.decode((NEW, OLD), value, time.time()) == cookie
    assert sessions.decode((NEW,), value, time.time()) is None


def heartbeat(url: str, token: str, seq: int) -> tuple[int, dict[str, object]]:
    body = json.dumps({"workload_id": "rot-1", "status": "RUNNING", "seq": seq}).encode()
    request = urllib.request.Request(
        url + "/v1/heartbeats",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def seen_at(api: PlatformAPI) -> str | None:
    status, doc = api.call("GET", "/v1/workloads/rot-1")
    return str(doc["last_seen_at"]) if status == 200 and doc["last_seen_at"] else None


def rejected(url: str) -> float:
    """statusd_heartbeats_rejected_total{reason="unauthorized"} of the serving process."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith('statusd_heartbeats_rejected_total{reason="unauthorized"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_container_heartbeats_through_the_rotation_with_nothing_rejected(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = PlatformAPI(url)
    phases = {
        "old": make_settings(heartbeat_ttl=0.6, secret=OLD.decode()),
        "rotating": make_settings(
            heartbeat_ttl=0.6, secret=NEW.decode(), secret_previous=OLD.decode()
        ),
        "new": make_settings(heartbeat_ttl=0.6, secret=NEW.decode()),
    }

    def serve(phase: str) -> AbstractContextManager[ManagedProcess]:
        return running_statusd(
            ["serve", "--host", "127.0.0.1", "--port", str(port)],
            env=settings_env(phases[phase]),
            ready_url=f"{url}/readyz",
            log_dir=tmp_path,
        )

    with serve("old"):
        old_token = api.register("rot-1")
        child_env = {
            **settings_env(phases["old"]),
            "STATUSD_URL": url,
            "STATUSD_WORKLOAD_ID": "rot-1",
            "STATUSD_HEARTBEAT_TOKEN": old_token,
        }
        child = start_process(
            [sys.executable, "-m", "tests.support.rotation_child"],
            env=child_env,
            log_dir=tmp_path,
            name="container",
        )
    try:
        with serve("old"):
            api.wait_state("rot-1", "RUNNING")
            assert rejected(url) == 0
        with serve("rotating"):
            wait_for_log(child, "switched rot-1 to a renewed heartbeat token", timeout=60)
            assert rejected(url) == 0
        with serve("new"):
            first = wait_for(lambda: seen_at(api), bool, within=60, what="a heartbeat")
            wait_for(
                lambda: seen_at(api),
                lambda later: later is not None and first is not None and later > first,
                within=60,
                what="heartbeats going on under the new secret alone",
            )
            assert rejected(url) == 0  # the container never sent the dropped secret's token
            status, answer = heartbeat(url, old_token, 1)
            assert status == 401 and answer["error"] == "unauthorized"
            assert rejected(url) == 1
            assert api.state("rot-1") == "RUNNING"
        log = child.log_tail(10_000_000)
        assert "running" in log
        assert log.count("switched rot-1") == 1
        assert "statusd refused" not in log, log  # not one heartbeat rejected in the rotation
    finally:
        if child.returncode is None:
            stop_process(child, signal.SIGKILL, timeout=10)


async def test_the_202s_carry_a_fresh_token_only_for_tokens_of_a_previous_secret(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(secret=NEW.decode(), secret_previous=OLD.decode())
    async with api_client(settings) as client:
        registered = await (
            await client.post("/v1/workloads", json={"id": "rot-1", "kind": "training"})
        ).json()
        current = registered["heartbeat_token"]
        assert not tokens.verify((NEW,), current).signed_by_previous
        old = tokens.issue(OLD, "rot-1", Kind.TRAINING, registered["generation"])
        beat = {"workload_id": "rot-1", "status": "RUNNING"}

        single = await client.post(
            "/v1/heartbeats", json={**beat, "seq": 1}, headers={"Authorization": f"Bearer {old}"}
        )
        answer = await single.json()
        assert single.status == 202
        assert tokens.verify((NEW,), answer["heartbeat_token"]) == tokens.verify((NEW,), current)
        plain = await client.post(
            "/v1/heartbeats",
            json={**beat, "seq": 2},
            headers={"Authorization": f"Bearer {current}"},
        )
        assert plain.status == 202 and "heartbeat_token" not in await plain.json()

        batch = await client.post(
            "/v1/heartbeats:batch",
            json={
                "items": [{**beat, "seq": 3, "token": old}, {**beat, "seq": 4, "token": current}]
            },
        )
        results = (await batch.json())["results"]
        assert [r["status"] for r in results] == [202, 202]
        assert results[0]["heartbeat_token"] == answer["heartbeat_token"]
        assert "heartbeat_token" not in results[1]
