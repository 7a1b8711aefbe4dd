"""One structured log line per transition: JSON in production, human-readable on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import time

from statusd.settings import Settings
from tests.conftest import settings_env

SCRIPT = textwrap.dedent(
    """
    import asyncio, logging
    from statusd.lifecycle import Kind, Source, State
    from statusd.logs import configure_logging
    from statusd.registry import register
    from statusd.wiring import open_runtime
    from statusd.settings import Settings
    from statusd.transitions import Observation, apply_observation

    async def main() -> None:
        settings = Settings()
        configure_logging(settings)
        rt = await open_runtime(settings)
        try:
            await register(rt.engine, "log-1", Kind.NOTEBOOK, labels={"owner": "alice"})
            await apply_observation(rt.ledger, Observation("log-1", State.READY, Source.PUSH, seq=1))
            await apply_observation(
                rt.ledger, Observation("log-1", State.UNREACHABLE, Source.SWEEPER, reason="2 polls failed")
            )
            logging.getLogger("aiohttp.access").warning("a stdlib line")
        finally:
            await rt.close()

    asyncio.run(main())
    """
)


def test_json_format_writes_one_parseable_line_per_transition(settings: Settings) -> None:
    env = {**settings_env(settings), "STATUSD_LOG_FORMAT": "json"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = [
        json.loads(line) for line in done.stderr.splitlines() if line.strip()
    ]  # every line is JSON
    transitions = [line for line in lines if line["event"] == "transition"]
    assert [(t["from"], t["to"], t["source"]) for t in transitions] == [
        ("PENDING", "READY", "push"),
        ("READY", "UNREACHABLE", "sweeper"),
    ]
    last = transitions[-1]
    assert last["workload_id"] == "log-1" and last["kind"] == "notebook"
    assert last["reason"] == "2 polls failed" and last["level"] == "info" and last["timestamp"]
    assert isinstance(last["transition_id"], int)
    stdlib = [line for line in lines if line["event"] == "a stdlib line"]
    assert stdlib and stdlib[0]["logger"] == "aiohttp.access" and stdlib[0]["level"] == "warning"


def test_auto_format_is_human_readable_on_a_terminal(settings: Settings) -> None:
    env = {**settings_env(settings), "STATUSD_LOG_FORMAT": "auto"}
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=follower,
            stdin=subprocess.DEVNULL,
        )
        os.close(follower)
        chunks = []
        deadline = time.monotonic() + 120
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the child did not finish within 120 s"
            if not select.select([leader], [], [], remaining)[0]:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = b"".join(chunks).decode(errors="replace")
    transition_lines = [
        line for line in text.splitlines() if "transition" in line and "log-1" in line
    ]
    assert len(transition_lines) == 2, text
    for line in transition_lines:
        assert not line.lstrip().startswith("{")  # console renderer, not JSON
    assert "UNREACHABLE" in transition_lines[-1] and "sweeper" in transition_lines[-1]
