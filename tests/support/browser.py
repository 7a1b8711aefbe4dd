"""Real headless Chromium for page tests, driven over the DevTools protocol (aiohttp websockets).

No selenium/chromedriver dependency: Chromium itself speaks CDP. Started with the flags CI needs
(--headless --no-sandbox --disable-gpu, no background networking) and a fresh profile; always
killed and reaped by `chromium()`.

    async with chromium(tmp_path) as browser:
        await browser.navigate("http://127.0.0.1:8080/")
        await browser.wait_for("document.querySelector('#stale-table') !== null")
        await browser.screenshot(Path("artifacts/page.png"))

Skips when Chromium is not installed, except on CI (CI=true), where it fails loudly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.databases import ON_CI

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_DEADLINE_S = 30.0


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if ON_CI:
        pytest.fail(
            "CI=true but Chromium is not installed: apt-get install -y chromium chromium-driver"
        )
    pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver)")


class Browser:
    """One page target, spoken to over its DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self.console: list[str] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        end = time.monotonic() + START_DEADLINE_S  # overall: console chatter cannot extend it
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{method}: no reply within {START_DEADLINE_S}s")
            msg = await asyncio.wait_for(self.ws.receive_json(), remaining)
            if msg.get("method") == "Runtime.consoleAPICalled":
                self.console.append(
                    " ".join(
                        str(a.get("value", a.get("description"))) for a in msg["params"]["args"]
                    )
                )
            if msg.get("id") == ident:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def wait_for(self, expression: str, deadline_s: float = 30.0) -> Any:
        """Poll a JS expression until it is truthy (bounded); returns its value."""
        end = time.monotonic() + deadline_s
        last: Any = None
        while time.monotonic() < end:
            with contextlib.suppress(AssertionError):  # mid-navigation: context not ready yet
                last = await self.evaluate(expression)
                if last:
                    return last
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"{expression!r} not true within {deadline_s}s (last: {last!r}); console: {self.console}"
        )

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return _write(path, base64.b64decode(shot["data"]))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _launch(binary: str, profile: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: killpg reaches every helper process
        )


async def _devtools_port(profile: Path, proc: subprocess.Popen[bytes], log: Path) -> int:
    marker = profile / "DevToolsActivePort"
    end = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"chromium exited with {proc.returncode}:\n{_tail(log)}")
        if marker.exists():
            first = marker.read_text().splitlines()
            if first and first[0].isdigit():
                return int(first[0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"chromium did not open DevTools within {START_DEADLINE_S}s")


@contextlib.asynccontextmanager
async def chromium(workdir: Path) -> AsyncIterator[Browser]:
    """A headless Chromium with a fresh profile under `workdir`; killed and reaped on exit."""
    binary = chromium_binary()
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    log = workdir / "chromium.log"
    proc = _launch(binary, profile, log)
    try:
        port = await _devtools_port(profile, proc, log)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t.get("type") == "page")
            async with session.ws_connect(
                page["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024
            ) as ws:
                browser = Browser(ws)
                await browser.send("Page.enable")
                await browser.send("Runtime.enable")
                yield browser
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # chromium's zygote/renderer children too
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
