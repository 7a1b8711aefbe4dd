"""A workload process using statusd-client, for the SIGTERM tests (run with `python -m`).

    python -m tests.support.client_child default     # no SIGTERM handler of its own
    python -m tests.support.client_child own-handler # the training's own handler, chained
    python -m tests.support.client_child async       # AsyncHeartbeater, no handler of its own
    python -m tests.support.client_child quiet N     # RUNNING, then announces N s of quiet

Configured by STATUSD_URL / STATUSD_WORKLOAD_ID / STATUSD_HEARTBEAT_TOKEN; it reports RUNNING,
prints "training" and trains (sleeps) until signalled.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from types import FrameType

from statusd_client import AsyncHeartbeater, Heartbeater


async def train_async() -> None:
    async with AsyncHeartbeater.from_env(interval=0.5) as hb:
        hb.set("RUNNING", "epoch 1")
        print("training", flush=True)
        await asyncio.Event().wait()  # trains until signalled


def announce_quiet(seconds: int) -> None:
    """RUNNING until statusd stored it, then `quiet(seconds)`: prints "quiet" and sleeps (the
    test kills it, as a frozen or restarting workload would go silent)."""
    hb = Heartbeater.from_env(interval=0.5, handle_sigterm=False)
    with hb:
        hb.set("RUNNING", "epoch 1")
        time.sleep(1.0)  # a few heartbeats at the 0.5 s interval
        hb.quiet(seconds, "writing a checkpoint")
        print("quiet", flush=True)
        while True:
            time.sleep(0.1)


def main(mode: str) -> None:
    if mode == "quiet":
        announce_quiet(int(sys.argv[2]))
        return
    if mode == "async":
        asyncio.run(train_async())
        return
    hb = Heartbeater.from_env(interval=0.5)
    if mode == "own-handler":
        # Installed before the heartbeater: it must still run, and decide how the process ends.
        def save_and_exit(signum: int, frame: FrameType | None) -> None:
            print("checkpoint saved", flush=True)
            hb.set("SUCCEEDED", "checkpoint saved on SIGTERM")
            sys.exit(0)

        signal.signal(signal.SIGTERM, save_and_exit)
    with hb:
        hb.set("RUNNING", "epoch 1")
        print("training", flush=True)
        while True:
            time.sleep(0.1)


if __name__ == "__main__":
    main(sys.argv[1])
