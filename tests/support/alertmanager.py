"""A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port,
notifying a loopback aiohttp webhook receiver; for the on-call tests.

Each one has its own config, `--storage.path` in the test's tmp dir and no cluster
(`--cluster.listen-address=` empty), with short group_wait / group_interval so a notification
follows an alert within about a second. `kill()` is a SIGKILL (alerts are lost with the process,
as in a crash); `start()` again brings up a fresh one on the same port.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from statusd.redis_runtime import free_port
from tests.support.loopback import LoopbackServer
from tests.support.processes import ManagedProcess, start_process, wait_for_http_async

BINARY = "prometheus-alertmanager"

CONFIG = """\
route:
  receiver: hook
  group_by: [alertname, workload]
  group_wait: 100ms
  group_interval: 500ms
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {hook_url}
        send_resolved: true
"""


def alertmanager_binary() -> str:
    found = shutil.which(BINARY)
    if found is None:
        raise AssertionError(
            f"{BINARY} is not installed: `make system-deps` (apt-get install -y {BINARY})"
        )
    return found


class NotificationReceiver(LoopbackServer):
    """Records Alertmanager's webhook notifications (version 4 JSON), one list per path."""

    def __init__(self) -> None:
        super().__init__()
        self.notifications: dict[str, list[dict[str, Any]]] = {}

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{path}", self._receive)

    async def _receive(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.notifications.setdefault(request.match_info["path"], []).append(body)
        return web.json_response({"ok": True})

    def alerts(self, path: str, status: str | None = None) -> list[dict[str, Any]]:
        """Every alert of every notification to `path` (in arrival order), of `status` if given."""
        return [
            alert
            for note in self.notifications.get(path, [])
            for alert in note["alerts"]
            if status is None or alert["status"] == status
        ]

    async def wait_for(
        self,
        path: str,
        status: str,
        workload: str,
        *,
        alertname: str | None = None,
        nth: int = 1,
        within: float = 30.0,
    ) -> dict[str, Any]:
        """The `nth` `status` alert about `workload` (named `alertname`, if given) that reached
        `path` (bounded wait)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = [
                a
                for a in self.alerts(path, status)
                if a["labels"].get("workload") == workload
                and alertname in (None, a["labels"]["alertname"])
            ]
            if len(found) >= nth:
                return found[nth - 1]
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"no {status} alert for {workload} at /{path} within {within}s: "
            f"{self.notifications.get(path)}"
        )


class Alertmanager:
    """One Alertmanager process; `base_url` goes into STATUSD_ALERTMANAGER_URLS."""

    def __init__(self, directory: Path, hook_url: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.hook_url = hook_url
        self.proc: ManagedProcess | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """A fresh process (new storage: nothing remembered from a previous one)."""
        self.starts += 1
        run = self.directory / f"run-{self.starts}"
        run.mkdir(parents=True, exist_ok=True)
        config = run / "alertmanager.yml"
        config.write_text(CONFIG.format(hook_url=self.hook_url))
        self.proc = start_process(
            [
                alertmanager_binary(),
                f"--config.file={config}",
                f"--storage.path={run / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            log_dir=self.directory,
            name="alertmanager",
        )
        await wait_for_http_async(f"{self.base_url}/-/ready", proc=self.proc, timeout=30)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill_tree()
            self.proc = None

    async def api(self, method: str, path: str, body: object = None) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{self.base_url}/api/v2/{path}", json=body) as resp,
        ):
            assert resp.status < 300, (resp.status, await resp.text())
            return await resp.json()

    async def alerts(self) -> list[dict[str, Any]]:
        return list(await self.api("GET", "alerts"))

    async def silence(self, label: str, value: str, comment: str) -> str:
        now = datetime.now(UTC)
        body = {
            "matchers": [{"name": label, "value": value, "isRegex": False, "isEqual": True}],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "on-call",
            "comment": comment,
        }
        return str((await self.api("POST", "silences", body))["silenceID"])
