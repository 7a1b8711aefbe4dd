"""A real `statusd serve` for the statusd-client tests, and the platform's side of the API (sync).

The client under test is synchronous (threads), so these helpers are too: urllib against the
server, every wait a bounded loop with a deadline.

    with running_serve(settings, tmp_path) as api:
        token = api.register("train-1")
        ... drive a Heartbeater against api.url ...
        api.wait_state("train-1", "SUCCEEDED")
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, settings_env
from tests.support.processes import free_port, running_statusd

T = TypeVar("T")


def wait_for(probe: Callable[[], T], done: Callable[[T], bool], *, within: float, what: str) -> T:
    """Call `probe` until `done(result)`; AssertionError naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {within:g}s; last seen: {result!r}")
        time.sleep(0.1)


@dataclass(frozen=True)
class PlatformAPI:
    """The statusd API as the platform backend uses it (API token)."""

    url: str

    def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {TEST_API_TOKEN}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def register(self, workload_id: str, kind: str = "training", **extra: object) -> str:
        """Register; the heartbeat token."""
        status, doc = self.call("POST", "/v1/workloads", {"id": workload_id, "kind": kind, **extra})
        assert status == 201, (status, doc)
        return str(doc["heartbeat_token"])

    def state(self, workload_id: str) -> str | None:
        status, doc = self.call("GET", f"/v1/workloads/{workload_id}")
        return str(doc["state"]) if status == 200 else None  # 503 while Redis is away

    def history(self, workload_id: str) -> list[tuple[str, str, str | None]]:
        """(to, source, reason) of every transition, oldest first."""
        status, doc = self.call("GET", f"/v1/workloads/{workload_id}/transitions?limit=500")
        assert status == 200, (status, doc)
        return [(t["to"], t["source"], t["reason"]) for t in doc["items"]]

    def wait_state(self, workload_id: str, state: str, *, within: float = 30.0) -> None:
        wait_for(
            lambda: self.state(workload_id),
            lambda s: s == state,
            within=within,
            what=f"{workload_id} reaching {state}",
        )


@contextlib.contextmanager
def running_serve(settings: Settings, log_dir: Path) -> Iterator[PlatformAPI]:
    """`statusd serve` (API + heartbeat consumers) on a free loopback port, ready on /readyz."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running_statusd(
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        env=settings_env(settings),
        ready_url=f"{url}/readyz",
        log_dir=log_dir,
    ):
        yield PlatformAPI(url)
