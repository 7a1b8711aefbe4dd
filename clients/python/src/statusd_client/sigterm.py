"""Reporting the final state when the container is told to stop (SIGTERM), without stealing it.

Installed only from the main thread (Python allows signal handlers nowhere else) and chained:
- a previous Python handler (the training's own, asyncio's) is called instead: the application
  decides; if it exits, the heartbeater's normal exit path reports the final state;
- SIG_IGN stays ignored;
- the default disposition (terminate) gets the final report first (bounded), then the default is
  restored and the signal re-delivered, so the process still dies of SIGTERM as it would have.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any, Callable


class SigtermHook:
    """One installed handler; `remove()` puts the previous one back if ours is still in place."""

    def __init__(self, report_and_die: Callable[[], None]) -> None:
        self._report_and_die = report_and_die
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self._previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)
        except (ValueError, OSError):  # not the main interpreter, or an embedded one
            return
        self._installed = True

    def remove(self) -> None:
        if not self._installed:
            return
        self._installed = False
        try:
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._previous)
        except (ValueError, OSError, TypeError):
            pass

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous
        if previous is signal.SIG_IGN:
            return
        if callable(previous):
            previous(signum, frame)
            return
        try:
            self._report_and_die()
        finally:
            self.remove()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
