"""Process supervision for `statusd up`: start children, watch them, stop the whole tree cleanly.

Each child runs in its own session (process group), so a terminal's Ctrl-C reaches `up` alone and
`up` decides the order: children first (SIGTERM, SIGKILL after a grace period, whole process
group plus every descendant psutil saw, e.g. Celery's pool processes), then the embedded Redis.
On Linux each child also gets PR_SET_PDEATHSIG, so even a SIGKILLed `up` leaves no orphans behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psutil
import structlog

log = structlog.get_logger("statusd.supervisor")

GRACE_S = 15.0  # SIGTERM -> SIGKILL; Celery's warm shutdown finishes its current task in this
POLL_S = 0.2
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    descendants: dict[int, float] = field(default_factory=dict)  # pid -> create_time
    oneshot: bool = False
    finished: bool = False  # a oneshot child that exited (its result was reported)

    def remember_descendants(self) -> None:
        with contextlib.suppress(psutil.Error):
            for proc in psutil.Process(self.popen.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.descendants[proc.pid] = proc.create_time()

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill_leftovers(self) -> None:
        """SIGKILL descendants still alive (verified by create time, so never a recycled pid)."""
        for pid, created in self.descendants.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if abs(proc.create_time() - created) < 0.01:
                    proc.kill()
                    proc.wait(5)


@dataclass
class Supervisor:
    """Children of `statusd up`. Use as a context manager: leaving it stops every child."""

    env: Mapping[str, str]
    grace_s: float = GRACE_S
    children: list[Child] = field(default_factory=list)
    died: Child | None = None  # the child whose death ended run()
    _signal: int | None = None
    _previous: dict[int, Any] = field(default_factory=dict)

    def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        oneshot: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Child:
        """Start a child (with `env` on top of the shared environment). A `oneshot` child (the
        demo fleet) may finish; the others must not."""
        popen = subprocess.Popen(
            list(args),
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509  (single-threaded here)
        )
        child = Child(name=name, args=list(args), popen=popen, oneshot=oneshot)
        self.children.append(child)
        log.info("up.child_started", child=name, pid=popen.pid)
        return child

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signal = signum

    def __enter__(self) -> Supervisor:
        """Take over SIGINT/SIGTERM: from here on they mean "stop everything cleanly"."""
        self._previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def signalled(self) -> bool:
        return self._signal is not None

    def _check_children(self) -> bool:
        """False (and `died` set) when a child has exited."""
        for child in self.children:
            status = child.popen.poll()
            if status is not None and child.oneshot:
                if not child.finished:
                    child.finished = True
                    report = log.info if status == 0 else log.warning
                    report("up.child_finished", child=child.name, exitcode=status)
                continue
            if status is not None:
                log.error("up.child_died", child=child.name, pid=child.popen.pid, exitcode=status)
                self.died = child
                return False
        return True

    def wait_for(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Poll `ready` until true; False on timeout, a signal, or a child's death."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.signalled and self._check_children():
            if ready():
                return True
            time.sleep(POLL_S)
        return False

    def watch(self) -> int:
        """Block until SIGINT/SIGTERM (-> 0) or a child's death (-> 1)."""
        tick = 0
        while not self.signalled:
            if not self._check_children():
                return 1
            if tick % 25 == 0:  # every ~5 s: keep track of pool processes children spawned
                for child in self.children:
                    child.remember_descendants()
            tick += 1
            time.sleep(POLL_S)
        log.info("up.stopping", signal=signal.Signals(self._signal or signal.SIGTERM).name)
        return 0

    def stop_all(self) -> None:
        """SIGTERM every child's group, wait up to the grace period, then SIGKILL what is left."""
        for child in self.children:
            child.remember_descendants()
            if child.popen.poll() is None:
                child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(max(0.0, deadline - time.monotonic()))
            if child.popen.poll() is None:
                log.warning("up.child_killed", child=child.name, pid=child.popen.pid)
            child.signal_group(signal.SIGKILL)  # also reaches group members the leader left behind
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(5)
            child.kill_leftovers()
