"""What Heartbeater and AsyncHeartbeater share: the desired report, the exit rule, logging once.

The training loop only ever writes `desired` (one attribute assignment, atomic under the GIL, so
even a signal handler interrupting `set()` sees either the old or the new report, never half).
The sender reads it, sends it with a fresh seq, and decides what to do from the answer.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from statusd_client.policy import Schedule
from statusd_client.seq import next_seq
from statusd_client.transport import (
    Accepted,
    Outcome,
    Refused,
    Report,
    Transient,
    heartbeat_body,
    send_heartbeat,
)

log = logging.getLogger("statusd_client")

FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})  # final for every kind that has them
ENV_URL, ENV_WORKLOAD_ID, ENV_TOKEN = (
    "STATUSD_URL",
    "STATUSD_WORKLOAD_ID",
    "STATUSD_HEARTBEAT_TOKEN",
)


class ConfigError(ValueError):
    """The client was given (or found in the environment) no usable url, workload id or token."""


@dataclass(frozen=True)
class Desired:
    report: Report
    version: int  # bumps on every set(): a refused report is parked until the next version


def from_environment() -> tuple[str, str, str]:
    """(url, workload_id, token) from STATUSD_URL, STATUSD_WORKLOAD_ID, STATUSD_HEARTBEAT_TOKEN."""
    values = [os.environ.get(name, "").strip() for name in (ENV_URL, ENV_WORKLOAD_ID, ENV_TOKEN)]
    missing = [
        name for name, value in zip((ENV_URL, ENV_WORKLOAD_ID, ENV_TOKEN), values) if not value
    ]
    if missing:
        raise ConfigError(f"statusd_client: {', '.join(missing)} not set")
    return values[0], values[1], values[2]


def exit_report(
    current: Report | None, exc: BaseException | None, on_error: str | None, on_stop: str | None
) -> Report | None:
    """The report to send once more when the heartbeater closes.

    A final state the workload set is always the answer. Otherwise an exception escaping the
    block means the workload failed (`on_error`, FAILED by default); an interruption (Ctrl-C,
    sys.exit with an error code) means it was stopped (`on_stop`, STOPPED by default); a clean
    exit repeats the last report as is (statusd cannot know more than the workload told it).
    """
    if current is None or current.status in FINAL_STATES or exc is None:
        return current
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return current
    if isinstance(exc, Exception):
        chosen, why = on_error, f"{type(exc).__name__}: {exc}"
    else:
        chosen, why = on_stop, f"interrupted ({type(exc).__name__})"
    return Report(chosen, why) if chosen else current


def sigterm_report(current: Report | None, on_stop: str | None) -> Report | None:
    """What to report when SIGTERM is about to terminate the process: a final state stays, any
    other becomes `on_stop` (STOPPED by default): the container was told to stop, and it did."""
    if current is None or current.status in FINAL_STATES or not on_stop:
        return current
    return Report(on_stop, "terminated by SIGTERM")


class Core:
    """The connection facts, the desired report and the once-only logging of both heartbeaters."""

    def __init__(
        self, url: str, workload_id: str, token: str, *, interval: float, timeout: float
    ) -> None:
        if not url or not workload_id or not token:
            raise ConfigError("statusd_client: url, workload_id and token are all required")
        self.url, self.workload_id, self.token = url.rstrip("/"), workload_id, token
        self.timeout = timeout
        self.schedule = Schedule(interval_s=interval)
        self.desired: Desired | None = None
        self.parked_version = -1  # the version a 4xx refused: not sent again
        self.last_refusal: Refused | None = None
        self._failing = False

    def set(self, status: str, detail: str | None) -> None:
        previous = self.desired
        version = previous.version + 1 if previous is not None else 0
        self.desired = Desired(Report(str(status), detail), version)

    def quiet(self, seconds: int, reason: str | None) -> None:
        """Announce a quiet period: the current state once more, with `quiet_for_s`."""
        previous = self.desired
        if previous is None:
            raise ValueError("statusd_client: set() a state before announcing a quiet period")
        if type(seconds) is not int or seconds <= 0:
            raise ValueError("statusd_client: quiet() takes a positive whole number of seconds")
        report = Report(previous.report.status, reason or previous.report.detail, seconds)
        self.desired = Desired(report, previous.version + 1)

    def settle_quiet(self, desired: Desired, outcome: Outcome) -> float | None:
        """After sending a quiet announcement: the current state goes back to a plain report
        (unless set() changed it meanwhile), and the pause before the next heartbeat is the
        quiet period when statusd stored it. None for any other report or outcome.

        A refused announcement (over STATUSD_MAX_QUIET_S) is not parked like other refusals:
        the plain report takes over at once, so the workload keeps being heard."""
        quiet = desired.report.quiet_for_s
        if not quiet:
            return None
        if self.desired is desired:
            plain = Report(desired.report.status, desired.report.detail)
            self.desired = Desired(plain, desired.version + 1)
        if isinstance(outcome, Refused):
            return 0.0
        return float(quiet) if isinstance(outcome, Accepted) else None

    def pending(self) -> Desired | None:
        """The report to send now, or None (nothing set yet, or the current one was refused)."""
        desired = self.desired
        if desired is None or desired.version == self.parked_version:
            return None
        return desired

    def closing_report(
        self, exc: BaseException | None, on_error: str | None, on_stop: str | None
    ) -> Report | None:
        """The exit report (see `exit_report`), or None if there is none or statusd refused it."""
        desired = self.desired
        report = exit_report(desired.report if desired else None, exc, on_error, on_stop)
        if desired is not None and report == desired.report and self.pending() is None:
            return None  # statusd refused exactly this report already: once is enough
        return report

    def send(self, report: Report) -> Outcome:
        """One blocking attempt (the async variant runs it in a thread). Logs what it must."""
        body = heartbeat_body(self.workload_id, report, next_seq())
        outcome = send_heartbeat(self.url, self.token, body, self.timeout)
        if isinstance(outcome, Accepted) and outcome.heartbeat_token:
            # statusd is rotating its signing secret: the old token stops working once it is gone.
            self.token = outcome.heartbeat_token
            log.info("statusd_client: switched %s to a renewed heartbeat token", self.workload_id)
        self._log(outcome, report)
        return outcome

    def note(self, desired: Desired, outcome: Outcome) -> None:
        """Park a refused report so it is never retried."""
        if isinstance(outcome, Refused):
            self.parked_version = desired.version

    def send_final(self, report: Report, budget_s: float) -> bool:
        """Send `report` until statusd stores or refuses it, within `budget_s`; True if stored.

        Blocking by design: it runs while the workload is exiting (leaving the block, SIGTERM).
        """
        deadline = time.monotonic() + budget_s
        schedule = Schedule(interval_s=0.0)
        while True:
            outcome = self.send(report)
            if not isinstance(outcome, Transient):
                return isinstance(outcome, Accepted)
            pause = schedule.after(outcome)
            if time.monotonic() + pause >= deadline:
                log.error(
                    "statusd_client: final state %s of %s not delivered within %.0fs (%s)",
                    report.status,
                    self.workload_id,
                    budget_s,
                    outcome.reason,
                )
                return False
            time.sleep(pause)

    def _log(self, outcome: Outcome, report: Report) -> None:
        if isinstance(outcome, Refused):
            self.last_refusal = outcome
            log.error(
                "statusd_client: statusd refused %s for %s (HTTP %d %s: %s); not retrying it",
                report.status,
                self.workload_id,
                outcome.code,
                outcome.error,
                outcome.message,
            )
        elif isinstance(outcome, Transient):
            if not self._failing:
                log.warning(
                    "statusd_client: heartbeat for %s not stored (%s); retrying with backoff",
                    self.workload_id,
                    outcome.reason,
                )
            else:
                log.debug("statusd_client: still failing: %s", outcome.reason)
            self._failing = True
        elif self._failing:
            self._failing = False
            log.info("statusd_client: heartbeats for %s are stored again", self.workload_id)
