"""`StatusdApi`: the platform backend's client for statusd's API, blocking (httpx).

with StatusdApi.from_env() as api:          # STATUSD_URL, STATUSD_API_TOKEN
    api.register("train-42", "training", labels={"team": "vision"})
    for event in api.watch(kind="training"):
        ...
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

import httpx

from statusd_client.api import calls
from statusd_client.api.calls import Call, RetryPolicy
from statusd_client.api.errors import StatusdApiError, Unavailable, from_answer
from statusd_client.api.models import (
    ApiKey,
    AuditEntry,
    CreatedKey,
    Deleted,
    Maintenance,
    Registered,
    Registration,
    RegistrationResult,
    Report,
    Silence,
    Transition,
    TransitionResult,
    Workload,
)
from statusd_client.api.routes import ROUTES, Route
from statusd_client.api.sse import EventDecoder, WatchPosition
from statusd_client.api.wire import (
    BATCH_SIZE,
    USER_AGENT,
    decode,
    one_by_one,
    partial_answer,
    transport_failure,
    watch_timeout,
)

T = TypeVar("T")


class StatusdApi:
    """statusd's API over one pooled HTTP connection set. Thread-safe (httpx.Client is).

    Every method raises a `StatusdApiError` subclass for a refused call. Reads are retried on a
    503 or a dropped connection as `retry` says, honouring Retry-After; writes never are."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        watch_read_timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.watch_read_timeout = watch_read_timeout
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
            transport=transport,  # e.g. an httpx transport with a proxy, or with retries of its own
        )
        self._document: Report | None = None

    @classmethod
    def from_env(cls, **kwargs: Any) -> StatusdApi:
        """From STATUSD_URL and STATUSD_API_TOKEN (KeyError naming the one missing)."""
        return cls(os.environ["STATUSD_URL"], os.environ["STATUSD_API_TOKEN"], **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StatusdApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending -----------------------------------------------------------------------------

    def _run(self, call: Call[T]) -> T:
        attempts = self.retry.attempts if call.route.idempotent else 1
        for attempt in range(attempts):
            try:
                return call.parse(self._send_once(call))
            except Unavailable as exc:
                if attempt + 1 >= attempts:
                    raise
                time.sleep(self.retry.wait(attempt, exc))
        raise AssertionError("unreachable")  # the loop returns or raises

    def _send_once(self, call: Call[Any]) -> Any:
        try:
            response = self._http.request(
                call.route.method, call.path, params=call.query, json=call.body
            )
        except httpx.TransportError as exc:
            raise transport_failure(call, exc) from exc
        body = decode(response.headers.get("Content-Type", ""), response.content)
        if response.is_success or partial_answer(call, response.status_code, body):
            return body
        raise from_answer(response.status_code, body, response.headers)

    # -- workloads ---------------------------------------------------------------------------

    def register(
        self,
        workload_id: str,
        kind: str,
        *,
        status_url: str | None = None,
        labels: Mapping[str, str] | None = None,
        parent: str | None = None,
    ) -> Registered:
        """Register a workload (PENDING): the workload and its heartbeat token.
        AlreadyRegistered if the id is registered; BadInput naming the field (`parent`: not
        registered, or the workload itself)."""
        return self._run(calls.register(workload_id, kind, status_url, labels, parent))

    def register_many(
        self, items: Iterable[Registration | Mapping[str, Any]], *, batch_size: int = BATCH_SIZE
    ) -> builtins.list[RegistrationResult]:
        """Register many workloads in one call per `batch_size`: one result per item, in order
        (an item's 409 or 422 is its result, not an exception). Against a statusd that has no
        `POST /v1/workloads:batch`, the items are registered one by one, with the same results."""
        wanted = calls.registrations(items)
        if not self._serves(ROUTES["register_many"]):
            return [self._register_one(item) for item in wanted]
        results: builtins.list[RegistrationResult] = []
        for start in range(0, len(wanted), batch_size):
            batch = calls.register_batch(wanted[start : start + batch_size])
            answered: builtins.list[RegistrationResult] = self._run(batch)
            results.extend(answered)
        return results

    def _register_one(self, item: Registration) -> RegistrationResult:
        try:
            registered = self.register(
                item.id,
                item.kind,
                status_url=item.status_url,
                labels=item.labels,
                parent=item.parent,
            )
        except StatusdApiError as exc:
            return one_by_one(item, exc)
        return RegistrationResult(item.id, 201, registered=registered)

    def _serves(self, route: Route) -> bool:
        if self._document is None:
            self._document = self.openapi()
        return calls.has_route(self._document, route)

    def get(self, workload_id: str) -> Workload:
        """One workload; NotFound if it is not registered."""
        return self._run(calls.get(workload_id))

    def list(
        self,
        *,
        kind: str | None = None,
        state: str | None = None,
        stale: bool | None = None,
        labels: Mapping[str, str] | None = None,
        id_prefix: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Workload]:
        """Every matching workload, in id order, following the cursors page by page."""
        cursor: str | None = None
        while True:
            page = self._run(
                calls.list_page(
                    kind=kind,
                    state=state,
                    stale=stale,
                    labels=labels,
                    id_prefix=id_prefix,
                    page_size=page_size,
                    cursor=cursor,
                )
            )
            yield from page.items
            if page.next is None:
                return
            cursor = page.next

    def history(self, workload_id: str, *, page_size: int = 500) -> Iterator[Transition]:
        """A workload's transitions, oldest first (every generation), page by page."""
        after = 0
        while True:
            page = self._run(calls.history_page(workload_id, after=after, page_size=page_size))
            yield from page.items
            if page.next is None:
                return
            after = int(page.next)

    def transition(
        self, workload_id: str, to: str, *, reason: str | None = None
    ) -> TransitionResult:
        """Move a workload (a user pressed stop: STOPPING). TransitionRefused with its `rule`."""
        return self._run(calls.transition(workload_id, to, reason))

    def deregister(self, workload_id: str) -> Deleted:
        """Stop tracking it (history stays); NotFound if it is not registered."""
        return self._run(calls.deregister(workload_id))

    # -- silences ----------------------------------------------------------------------------

    def create_silence(
        self,
        *,
        until: datetime,
        reason: str,
        kind: str | None = None,
        label: tuple[str, str] | None = None,
        workload_id: str | None = None,
    ) -> Silence:
        """No alerts for matching workloads (all matchers given must match) until `until`."""
        return self._run(
            calls.create_silence(
                kind=kind, label=label, workload_id=workload_id, until=until, reason=reason
            )
        )

    def silences(self, *, active: bool | None = None) -> builtins.list[Silence]:
        """Silences, latest end first (`active=True`: those in force only)."""
        return self._run(calls.silences(active))

    def delete_silence(self, silence_id: str) -> Deleted:
        """End a silence now; NotFound if unknown."""
        return self._run(calls.delete_silence(silence_id))

    # -- maintenance windows ----------------------------------------------------------------

    def create_maintenance(
        self,
        *,
        reason: str,
        start: datetime | None = None,
        end: datetime | None = None,
        schedule: str | None = None,
        duration_s: int | None = None,
        timezone: str | None = None,
        kind: str | None = None,
        label: tuple[str, str] | None = None,
        workload_id: str | None = None,
    ) -> Maintenance:
        """A maintenance window for matching workloads (all matchers given must match):
        `start`/`end`, or a recurring cron `schedule` + `duration_s` in an IANA `timezone`."""
        return self._run(
            calls.create_maintenance(
                kind=kind,
                label=label,
                workload_id=workload_id,
                reason=reason,
                start=start,
                end=end,
                schedule=schedule,
                duration_s=duration_s,
                timezone=timezone,
            )
        )

    def maintenances(self) -> builtins.list[Maintenance]:
        """Maintenance windows, newest first."""
        return self._run(calls.maintenances())

    def maintenance(self, maintenance_id: str) -> Maintenance:
        """One maintenance window; NotFound if unknown."""
        return self._run(calls.maintenance(maintenance_id))

    def delete_maintenance(self, maintenance_id: str) -> Deleted:
        """Delete a maintenance window (an occurrence in force ends now); NotFound if unknown."""
        return self._run(calls.delete_maintenance(maintenance_id))

    # -- events ------------------------------------------------------------------------------

    def watch(
        self,
        *,
        kind: str | None = None,
        workload_id: str | None = None,
        after: int | None = None,
    ) -> Iterator[Transition]:
        """Committed transitions as they happen, in id order, forever (break out, or close the
        iterator, to stop).

        Starts after transition `after` (the `id` of the last one you handled), or with the
        first committed after this call. When the stream drops (statusd restarted, a proxy cut
        it, a 503) it reconnects with `Last-Event-ID` and resumes right after the last
        transition yielded: none is skipped, none is yielded twice. Refusals (401, 403, a bad
        filter) are raised."""
        start = after if after is not None else self._run(calls.resume_point())
        return self._follow(WatchPosition(start), calls.watch_query(kind, workload_id))

    def _follow(self, position: WatchPosition, query: calls.Query) -> Iterator[Transition]:
        decoder = EventDecoder()
        timeout = watch_timeout(self._http.timeout.connect, self.watch_read_timeout)
        route = ROUTES["watch"]
        while True:
            retry_after: float | None = None
            decoder.reset()
            try:
                with self._http.stream(
                    route.method,
                    route.path,
                    params=query,
                    headers=position.headers(),
                    timeout=timeout,
                ) as response:
                    if response.status_code != 200:
                        error = from_answer(
                            response.status_code,
                            decode(response.headers.get("Content-Type", ""), response.read()),
                            response.headers,
                        )
                        if not isinstance(error, Unavailable):
                            raise error
                        retry_after = error.retry_after
                    else:
                        position.connected()
                        for line in response.iter_lines():
                            event = decoder.feed(line)
                            if event is not None:
                                transition = position.accept(event)
                                if transition is not None:
                                    yield transition
            except httpx.TransportError:
                pass  # dropped or refused: reconnect below
            time.sleep(position.reconnect_delay(decoder.retry_ms, retry_after))

    # -- keys, audit, retention (admin) -----------------------------------------------------

    def create_key(
        self,
        name: str,
        scope: str,
        *,
        labels: Mapping[str, str] | None = None,
        expires_in: str | None = None,
    ) -> CreatedKey:
        """A scoped API key (`read`, `write`, `admin`; `labels` limit it to matching workloads;
        `expires_in` like `90d`). The key is in this answer only."""
        return self._run(calls.create_key(name, scope, labels, expires_in))

    def keys(self) -> builtins.list[ApiKey]:
        """Every API key, revoked and expired ones too (never a secret)."""
        return self._run(calls.keys())

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key: refused in every statusd process within seconds."""
        return self._run(calls.revoke_key(key_id))

    def audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        page_size: int = 100,
    ) -> Iterator[AuditEntry]:
        """The audit trail, oldest first, following the cursors."""
        cursor: str | None = None
        while True:
            page = self._run(
                calls.audit_page(
                    actor=actor,
                    action=action,
                    target=target,
                    since=since,
                    page_size=page_size,
                    cursor=cursor,
                )
            )
            yield from page.items
            if page.next is None:
                return
            cursor = page.next

    def prune(self, *, dry_run: bool = False) -> Report:
        """Delete what is out of retention policy now (`dry_run`: only count it)."""
        return self._run(calls.prune(dry_run))

    def availability(
        self,
        *,
        kinds: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        ids: Iterable[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        group_by: str | None = None,
    ) -> Report:
        """Seconds per state group and availability per workload and group, `start` to `end`
        (`group_by="kind"` or `"label:team"`)."""
        result: Report = self._run(
            calls.availability(
                kinds=kinds,
                labels=labels,
                ids=ids,
                start=start,
                end=end,
                group_by=group_by,
                fmt="json",
            )
        )
        return result

    def availability_csv(
        self,
        *,
        kinds: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        ids: Iterable[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        group_by: str | None = None,
    ) -> str:
        """The availability report as CSV text (`text/csv`)."""
        result: str = self._run(
            calls.availability(
                kinds=kinds,
                labels=labels,
                ids=ids,
                start=start,
                end=end,
                group_by=group_by,
                fmt="csv",
            )
        )
        return result

    # -- reports and probes ------------------------------------------------------------------

    def recent_transitions(
        self, *, limit: int | None = None, kind: str | None = None, workload_id: str | None = None
    ) -> Report:
        """Newest transitions first; `last_id` is where `watch(after=...)` resumes."""
        return self._run(calls.recent_transitions(limit, kind, workload_id))

    def stale_report(
        self,
        *,
        kinds: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        older_than: str | None = None,
    ) -> Report:
        """Stale, UNREACHABLE and LOST workloads, worst first (`older_than` like `5m`)."""
        result: Report = self._run(calls.stale_report(kinds, labels, older_than, "json"))
        return result

    def stale_report_csv(
        self,
        *,
        kinds: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        older_than: str | None = None,
    ) -> str:
        """The stale report as CSV text (`text/csv`)."""
        result: str = self._run(calls.stale_report(kinds, labels, older_than, "csv"))
        return result

    def summary(self) -> Report:
        """Counts per kind and state, stale counts, sync backlog, stream lag."""
        return self._run(calls.summary())

    def workload_story(self, workload_id: str) -> Report:
        """One workload's timeline, transitions, refused observations, polls and sync."""
        return self._run(calls.workload_story(workload_id))

    def fleet_history(
        self, *, window: str | None = None, step: str | None = None, kind: str | None = None
    ) -> Report:
        """Counts by state at each step of a recent window (`window="1h", step="1m"`)."""
        return self._run(calls.fleet_history(window, step, kind))

    def selfwatch(self) -> Report:
        """statusd's own health: disruption mode, a stalled sweeper."""
        return self._run(calls.selfwatch())

    def health(self) -> Report:
        """`/healthz`: the process is up."""
        return self._run(calls.health())

    def readiness(self) -> Report:
        """`/readyz`: Redis and the database answer (Unavailable, with the checks, if not)."""
        return self._run(calls.readiness())

    def openapi(self) -> Report:
        """The OpenAPI document statusd serves."""
        return self._run(calls.openapi())
