"""`Heartbeater`: a daemon thread that keeps statusd told what the workload is doing.

    with Heartbeater.from_env() as hb:
        hb.set("RUNNING")
        for epoch in range(10):
            train(epoch)
            hb.set("RUNNING", f"epoch {epoch + 1}/10")
        hb.set("SUCCEEDED")

`set()` only records the desired state and wakes the thread: it never blocks on the network and
never raises because statusd is away. The thread sends the current state at once after a change,
then every `interval` seconds (or when statusd's `next_heartbeat_s` says), backs off with jitter
on 503s and network errors (never sooner than Retry-After), and never retries a 4xx.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from statusd_client.core import Core, Desired, from_environment, sigterm_report
from statusd_client.sigterm import SigtermHook
from statusd_client.transport import Refused, Transient

log = logging.getLogger("statusd_client")

DEFAULT_INTERVAL_S = 5.0  # well within statusd's default 30 s heartbeat TTL
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_FINAL_TIMEOUT_S = 10.0  # inside Kubernetes' default 30 s termination grace


class Heartbeater:
    """Heartbeats for one workload. Use as a context manager (or call `start()` and `close()`)."""

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
        """`url` is statusd's base URL; `token` the heartbeat token its registration answered.

        `on_error` / `on_stop`: the state reported when the block exits with an exception / is
        interrupted (Ctrl-C, SIGTERM, sys.exit(non-zero)) before a final state was set; None
        keeps the last state. `handle_sigterm`: report on SIGTERM (main thread only, chained).
        """
        self._core = Core(url, workload_id, token, interval=interval, timeout=timeout)
        self._final_timeout = final_timeout
        self._on_error, self._on_stop = on_error, on_stop
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._sigterm = SigtermHook(self._report_sigterm) if handle_sigterm else None

    @classmethod
    def from_env(cls, **options: object) -> Heartbeater:
        """From STATUSD_URL, STATUSD_WORKLOAD_ID and STATUSD_HEARTBEAT_TOKEN (ConfigError if unset)."""
        url, workload_id, token = from_environment()
        return cls(url, workload_id, token, **options)  # type: ignore[arg-type]

    @property
    def status(self) -> str | None:
        """The state last passed to `set()` (what `serve_status` can answer), or None."""
        desired = self._core.desired
        return desired.report.status if desired is not None else None

    @property
    def last_refusal(self) -> Refused | None:
        """The last 4xx statusd answered (code, error, message), for the workload to inspect."""
        return self._core.last_refusal

    def set(self, status: str, detail: str | None = None) -> None:
        """Record the state to report (e.g. "RUNNING", "SUCCEEDED") and wake the sender."""
        self._core.set(status, detail)
        self._wake.set()

    def quiet(self, seconds: int, reason: str | None = None) -> None:
        """Tell statusd the workload will be silent for `seconds` (a checkpoint, a planned
        restart): the current state is sent at once with `quiet_for_s`, and statusd does not
        judge the workload stale before the period ends. No heartbeat is sent meanwhile unless
        `set()` is called (which ends the quiet period). At most STATUSD_MAX_QUIET_S (default
        3600); a longer one is refused (see `last_refusal`) and heartbeats go on as before."""
        self._core.quiet(seconds, reason)
        self._wake.set()

    def start(self) -> Heartbeater:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"statusd-heartbeat-{self._core.workload_id}", daemon=True
            )
            self._thread.start()
            if self._sigterm is not None:
                self._sigterm.install()
        return self

    def close(self, exc: BaseException | None = None) -> None:
        """Stop the thread and send the exit report once more (bounded by `final_timeout`)."""
        if self._closing:
            return
        self._closing = True
        if self._sigterm is not None:
            self._sigterm.remove()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self._core.timeout + 1.0)
        self._send_exit_report(exc)

    def __enter__(self) -> Heartbeater:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc)

    def _send_exit_report(self, exc: BaseException | None) -> None:
        report = self._core.closing_report(exc, self._on_error, self._on_stop)
        if report is None:
            return
        try:
            self._core.send_final(report, self._final_timeout)
        except Exception:  # never let reporting turn a clean exit into a crash
            log.exception("statusd_client: could not send the final state")

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

    def _run(self) -> None:
        while not self._closing:
            try:
                delay = self._beat()
            except Exception:  # a bug here must cost a heartbeat, never the thread
                log.exception("statusd_client: heartbeat thread error")
                delay = self._core.schedule.after(Transient("internal error", None))
            self._sleep(delay)

    def _beat(self) -> float | None:
        """Send the pending report once; the pause before the next (None: until `set()`)."""
        # A wake-up from before this read is answered by this send: left set, it would cut the
        # next pause short (a quiet period announced before the first beat ended at once).
        self._wake.clear()
        desired: Desired | None = self._core.pending()
        if desired is None:
            return None
        outcome = self._core.send(desired.report)
        self._core.note(desired, outcome)
        quiet = self._core.settle_quiet(desired, outcome)
        if quiet is not None:
            return quiet
        if isinstance(outcome, Refused):
            return None
        delay = self._core.schedule.after(outcome)
        if isinstance(outcome, Transient):
            # A backoff is a hold: a set() meanwhile is sent when it ends, not at once.
            self._hold(delay)
            return 0.0
        return delay

    def _hold(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._closing:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(left)
            self._wake.clear()

    def _sleep(self, seconds: float | None) -> None:
        """Until `seconds` pass or `set()` / `close()` wakes us; a change is sent at once."""
        if self._closing or seconds == 0.0:
            return
        self._wake.wait(seconds)
        self._wake.clear()
