"""`AsyncHeartbeater`: the same contract as `Heartbeater`, as an asyncio task.

    async with AsyncHeartbeater.from_env() as hb:
        hb.set("RUNNING")
        await train()
        hb.set("SUCCEEDED")

Nothing blocks the event loop: each HTTP request runs in a worker thread (urllib through
`run_in_executor`), `set()` is a plain assignment plus an event, and waits are `asyncio` waits.
The SIGTERM hook is the one Heartbeater uses: on the default disposition it sends the final state
(bounded, blocking on purpose: the process is terminating) and then lets SIGTERM kill the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

from statusd_client.core import Core, from_environment, sigterm_report
from statusd_client.heartbeater import (
    DEFAULT_FINAL_TIMEOUT_S,
    DEFAULT_INTERVAL_S,
    DEFAULT_TIMEOUT_S,
)
from statusd_client.policy import Schedule
from statusd_client.sigterm import SigtermHook
from statusd_client.transport import Accepted, Outcome, Refused, Report, Transient

log = logging.getLogger("statusd_client")


class AsyncHeartbeater:
    """Heartbeats for one workload from asyncio code. Use `async with` (or `start()`/`aclose()`)."""

    def __init__(
        self,
        url: str,
        workload_id: str,
        token: str,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        timeout: float = DEFAULT_TIMEOUT_S,
        final_timeout: float = DEFAULT_FINAL_TIMEOUT_S,
        on_error: str | None = "FAILED",
        on_stop: str | None = "STOPPED",
        handle_sigterm: bool = True,
    ) -> None:
        """The same arguments as `Heartbeater`."""
        self._core = Core(url, workload_id, token, interval=interval, timeout=timeout)
        self._final_timeout = final_timeout
        self._on_error, self._on_stop = on_error, on_stop
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._sigterm = SigtermHook(self._report_sigterm) if handle_sigterm else None

    @classmethod
    def from_env(cls, **options: object) -> AsyncHeartbeater:
        """From STATUSD_URL, STATUSD_WORKLOAD_ID and STATUSD_HEARTBEAT_TOKEN (ConfigError if unset)."""
        url, workload_id, token = from_environment()
        return cls(url, workload_id, token, **options)  # type: ignore[arg-type]

    @property
    def status(self) -> str | None:
        """The state last passed to `set()`, or None."""
        desired = self._core.desired
        return desired.report.status if desired is not None else None

    @property
    def last_refusal(self) -> Refused | None:
        """The last 4xx statusd answered, for the workload to inspect."""
        return self._core.last_refusal

    def set(self, status: str, detail: str | None = None) -> None:
        """Record the state to report and wake the task. Safe from the loop's thread only."""
        self._core.set(status, detail)
        if self._wake is not None:
            self._wake.set()

    def quiet(self, seconds: int, reason: str | None = None) -> None:
        """See Heartbeater.quiet. Safe from the loop's thread only."""
        self._core.quiet(seconds, reason)
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> AsyncHeartbeater:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = self._loop.create_task(self._run(), name="statusd-heartbeat")
            if self._sigterm is not None:
                self._sigterm.install()
        return self

    async def aclose(self, exc: BaseException | None = None) -> None:
        """Stop the task and send the exit report once more (bounded by `final_timeout`)."""
        if self._closing:
            return
        self._closing = True
        if self._sigterm is not None:
            self._sigterm.remove()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        report = self._core.closing_report(exc, self._on_error, self._on_stop)
        if report is None:
            return
        try:
            await self._final(report)
        except Exception:
            log.exception("statusd_client: could not send the final state")

    async def __aenter__(self) -> AsyncHeartbeater:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose(exc)

    async def _send(self, report: Report) -> Outcome:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._core.send, report)

    async def _final(self, report: Report) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._final_timeout
        schedule = Schedule(interval_s=0.0)
        while True:
            outcome = await self._send(report)
            if not isinstance(outcome, Transient):
                return isinstance(outcome, Accepted)
            pause = schedule.after(outcome)
            if loop.time() + pause >= deadline:
                log.error(
                    "statusd_client: final state %s not delivered (%s)",
                    report.status,
                    outcome.reason,
                )
                return False
            await asyncio.sleep(pause)

    def _report_sigterm(self) -> None:
        self._closing = True
        desired = self._core.desired
        report = sigterm_report(desired.report if desired is not None else None, self._on_stop)
        if report is None:
            return
        try:
            self._core.send_final(report, self._final_timeout)
        except Exception:
            log.exception("statusd_client: could not send the final state on SIGTERM")

    async def _run(self) -> None:
        while not self._closing:
            try:
                delay = await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("statusd_client: heartbeat task error")
                delay = self._core.schedule.after(Transient("internal error", None))
            await self._sleep(delay)

    async def _beat(self) -> float | None:
        # A wake-up from before this read is answered by this send (see Heartbeater._beat).
        if self._wake is not None:
            self._wake.clear()
        desired = self._core.pending()
        if desired is None:
            return None
        outcome = await self._send(desired.report)
        self._core.note(desired, outcome)
        quiet = self._core.settle_quiet(desired, outcome)
        if quiet is not None:
            return quiet
        if isinstance(outcome, Refused):
            return None
        delay = self._core.schedule.after(outcome)
        if isinstance(outcome, Transient):
            await asyncio.sleep(delay)  # a backoff is a hold: set() meanwhile waits for it
            return 0.0
        return delay

    async def _sleep(self, seconds: float | None) -> None:
        assert self._wake is not None  # set in start(); internal invariant, not input checking
        if seconds == 0.0:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()
