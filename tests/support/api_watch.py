"""A `watch()` of the API client run on a thread of its own, collecting what it yields.

with Watcher(api, kind="training") as watcher:
    ... cause transitions ...
    watcher.wait_for(lambda events: len(events) >= 5, what="five transitions")
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from statusd_client import StatusdApi, Transition

from tests.support.client_stack import wait_for


class Watcher:
    def __init__(self, api: StatusdApi, **filters: Any) -> None:
        self.events: list[Transition] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # watch() takes its resume point when called, before the caller causes anything.
        self._stream = api.watch(**filters)
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def _run(self) -> None:
        try:
            for event in self._stream:
                with self._lock:
                    self.events.append(event)
                if self._stop.is_set():
                    return
        except BaseException as exc:  # reported to the test by wait_for
            self.error = exc

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # the thread ends at its next event; it is a daemon otherwise

    def snapshot(self) -> list[Transition]:
        with self._lock:
            return list(self.events)

    def wait_for(
        self, done: Callable[[list[Transition]], bool], *, what: str, within: float = 60.0
    ) -> list[Transition]:
        def probe() -> list[Transition]:
            if self.error is not None:
                raise AssertionError(f"watch() failed: {self.error!r}") from self.error
            return self.snapshot()

        return wait_for(probe, done, within=within, what=what)
