"""`AsyncStatusdApi`: `StatusdApi` for asyncio (httpx.AsyncClient): the same methods, awaited;
`list`, `history` and `watch` are async iterators.

    async with AsyncStatusdApi.from_env() as api:
        await api.register("train-42", "training")
        async for event in api.watch(workload_id="train-42"):
            ...
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator, Iterable, Mapping
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


class AsyncStatusdApi:
    """statusd's API on an asyncio loop; one instance per loop. See `StatusdApi`."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        watch_read_timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.watch_read_timeout = watch_read_timeout
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
            transport=transport,  # e.g. an httpx transport with a proxy, or with retries of its own
        )
        self._document: Report | None = None

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncStatusdApi:
        """From STATUSD_URL and STATUSD_API_TOKEN (KeyError naming the one missing)."""
        return cls(os.environ["STATUSD_URL"], os.environ["STATUSD_API_TOKEN"], **kwargs)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncStatusdApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sending -----------------------------------------------------------------------------

    async def _run(self, call: Call[T]) -> T:
        attempts = self.retry.attempts if call.route.idempotent else 1
        for attempt in range(attempts):
            try:
                return call.parse(await self._send_once(call))
            except Unavailable as exc:
                if attempt + 1 >= attempts:
                    raise
                await asyncio.sleep(self.retry.wait(attempt, exc))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _send_once(self, call: Call[Any]) -> Any:
        try:
            response = await self._http.request(
                call.route.method, call.path, params=call.query, json=call.body
            )
        except httpx.TransportError as exc:
            raise transport_failure(call, exc) from exc
        body = decode(response.headers.get("Content-Type", ""), response.content)
        if response.is_success or partial_answer(call, response.status_code, body):
            return body
        raise from_answer(response.status_code, body, response.headers)

    # -- workloads ---------------------------------------------------------------------------

    async def register(
        self,
        workload_id: str,
        kind: str,
        *,
        status_url: str | None = None,
        labels: Mapping[str, str] | None = None,
        parent: str | None = None,
    ) -> Registered:
        """See StatusdApi.register."""
        return await self._run(calls.register(workload_id, kind, status_url, labels, parent))

    async def register_many(
        self, items: Iterable[Registration | Mapping[str, Any]], *, batch_size: int = BATCH_SIZE
    ) -> builtins.list[RegistrationResult]:
        """See StatusdApi.register_many."""
        wanted = calls.registrations(items)
        if not await self._serves(ROUTES["register_many"]):
            return [await self._register_one(item) for item in wanted]
        results: builtins.list[RegistrationResult] = []
        for start in range(0, len(wanted), batch_size):
            batch = calls.register_batch(wanted[start : start + batch_size])
            answered: builtins.list[RegistrationResult] = await self._run(batch)
            results.extend(answered)
        return results

    async def _register_one(self, item: Registration) -> RegistrationResult:
        try:
            registered = await self.register(
                item.id,
                item.kind,
                status_url=item.status_url,
                labels=item.labels,
                parent=item.parent,
            )
        except StatusdApiError as exc:
            return one_by_one(item, exc)
        return RegistrationResult(item.id, 201, registered=registered)

    async def _serves(self, route: Route) -> bool:
        if self._document is None:
            self._document = await self.openapi()
        return calls.has_route(self._document, route)

    async def get(self, workload_id: str) -> Workload:
        """See StatusdApi.get."""
        return await self._run(calls.get(workload_id))

    async def list(
        self,
        *,
        kind: str | None = None,
        state: str | None = None,
        stale: bool | None = None,
        labels: Mapping[str, str] | None = None,
        id_prefix: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Workload]:
        """See StatusdApi.list (an async iterator)."""
        cursor: str | None = None
        while True:
            page = await self._run(
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
            for item in page.items:
                yield item
            if page.next is None:
                return
            cursor = page.next

    async def history(self, workload_id: str, *, page_size: int = 500) -> AsyncIterator[Transition]:
        """See StatusdApi.history (an async iterator)."""
        after = 0
        while True:
            page = await self._run(
                calls.history_page(workload_id, after=after, page_size=page_size)
            )
            for item in page.items:
                yield item
            if page.next is None:
                return
            after = int(page.next)

    async def transition(
        self, workload_id: str, to: str, *, reason: str | None = None
    ) -> TransitionResult:
        """See StatusdApi.transition."""
        return await self._run(calls.transition(workload_id, to, reason))

    async def deregister(self, workload_id: str) -> Deleted:
        """See StatusdApi.deregister."""
        return await self._run(calls.deregister(workload_id))

    # -- silences ----------------------------------------------------------------------------

    async def create_silence(
        self,
        *,
        until: datetime,
        reason: str,
        kind: str | None = None,
        label: tuple[str, str] | None = None,
        workload_id: str | None = None,
    ) -> Silence:
        """See StatusdApi.create_silence."""
        return await self._run(
            calls.create_silence(
                kind=kind, label=label, workload_id=workload_id, until=until, reason=reason
            )
        )

    async def silences(self, *, active: bool | None = None) -> builtins.list[Silence]:
        """See StatusdApi.silences."""
        return await self._run(calls.silences(active))

    async def delete_silence(self, silence_id: str) -> Deleted:
        """See StatusdApi.delete_silence."""
        return await self._run(calls.delete_silence(silence_id))

    # -- maintenance windows ----------------------------------------------------------------

    async def create_maintenance(
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
        """See StatusdApi.create_maintenance."""
        return await self._run(
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

    async def maintenances(self) -> builtins.list[Maintenance]:
        """See StatusdApi.maintenances."""
        return await self._run(calls.maintenances())

    async def maintenance(self, maintenance_id: str) -> Maintenance:
        """See StatusdApi.maintenance."""
        return await self._run(calls.maintenance(maintenance_id))

    async def delete_maintenance(self, maintenance_id: str) -> Deleted:
        """See StatusdApi.delete_maintenance."""
        return await self._run(calls.delete_maintenance(maintenance_id))

    # -- events ------------------------------------------------------------------------------

    async def watch(
        self,
        *,
        kind: str | None = None,
        workload_id: str | None = None,
        after: int | None = None,
    ) -> AsyncIterator[Transition]:
        """See StatusdApi.watch (an async iterator: `async for event in api.watch(): ...`).
        Without `after`, it starts with the first transition committed after the iteration
        starts (the resume point is read then, not when `watch()` is called)."""
        start = after if after is not None else await self._run(calls.resume_point())
        position = WatchPosition(start)
        decoder = EventDecoder()
        query = calls.watch_query(kind, workload_id)
        timeout = watch_timeout(self._http.timeout.connect, self.watch_read_timeout)
        route = ROUTES["watch"]
        while True:
            retry_after: float | None = None
            decoder.reset()
            try:
                async with self._http.stream(
                    route.method,
                    route.path,
                    params=query,
                    headers=position.headers(),
                    timeout=timeout,
                ) as response:
                    if response.status_code != 200:
                        error = from_answer(
                            response.status_code,
                            decode(
                                response.headers.get("Content-Type", ""), await response.aread()
                            ),
                            response.headers,
                        )
                        if not isinstance(error, Unavailable):
                            raise error
                        retry_after = error.retry_after
                    else:
                        position.connected()
                        async for line in response.aiter_lines():
                            event = decoder.feed(line)
                            if event is not None:
                                transition = position.accept(event)
                                if transition is not None:
                                    yield transition
            except httpx.TransportError:
                pass  # dropped or refused: reconnect below
            await asyncio.sleep(position.reconnect_delay(decoder.retry_ms, retry_after))

    # -- keys, audit, retention (admin) -----------------------------------------------------

    async def create_key(
        self,
        name: str,
        scope: str,
        *,
        labels: Mapping[str, str] | None = None,
        expires_in: str | None = None,
    ) -> CreatedKey:
        """A scoped API key (`read`, `write`, `admin`; `labels` limit it to matching workloads;
        `expires_in` like `90d`). The key is in this answer only."""
        return await self._run(calls.create_key(name, scope, labels, expires_in))

    async def keys(self) -> builtins.list[ApiKey]:
        """Every API key, revoked and expired ones too (never a secret)."""
        return await self._run(calls.keys())

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key: refused in every statusd process within seconds."""
        return await self._run(calls.revoke_key(key_id))

    async def audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[AuditEntry]:
        """The audit trail, oldest first, following the cursors."""
        cursor: str | None = None
        while True:
            page = await self._run(
                calls.audit_page(
                    actor=actor,
                    action=action,
                    target=target,
                    since=since,
                    page_size=page_size,
                    cursor=cursor,
                )
            )
            for item in page.items:
                yield item
            if page.next is None:
                return
            cursor = page.next

    async def prune(self, *, dry_run: bool = False) -> Report:
        """Delete what is out of retention policy now (`dry_run`: only count it)."""
        return await self._run(calls.prune(dry_run))

    async def availability(
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
        result: Report = await self._run(
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

    async def availability_csv(
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
        result: str = await self._run(
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

    async def recent_transitions(
        self, *, limit: int | None = None, kind: str | None = None, workload_id: str | None = None
    ) -> Report:
        """See StatusdApi.recent_transitions."""
        return await self._run(calls.recent_transitions(limit, kind, workload_id))

    async def stale_report(
        self,
        *,
        kinds: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        older_than: str | None = None,
    ) -> Report:
        """See StatusdApi.stale_report."""
        result: Report = await self._run(calls.stale_report(kinds, labels, older_than, "json"))
        return result

    async def stale_report_csv(
        self,
        *,
        kinds: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        older_than: str | None = None,
    ) -> str:
        """See StatusdApi.stale_report_csv."""
        result: str = await self._run(calls.stale_report(kinds, labels, older_than, "csv"))
        return result

    async def summary(self) -> Report:
        """See StatusdApi.summary."""
        return await self._run(calls.summary())

    async def workload_story(self, workload_id: str) -> Report:
        """See StatusdApi.workload_story."""
        return await self._run(calls.workload_story(workload_id))

    async def fleet_history(
        self, *, window: str | None = None, step: str | None = None, kind: str | None = None
    ) -> Report:
        """See StatusdApi.fleet_history."""
        return await self._run(calls.fleet_history(window, step, kind))

    async def selfwatch(self) -> Report:
        """See StatusdApi.selfwatch."""
        return await self._run(calls.selfwatch())

    async def health(self) -> Report:
        """See StatusdApi.health."""
        return await self._run(calls.health())

    async def readiness(self) -> Report:
        """See StatusdApi.readiness."""
        return await self._run(calls.readiness())

    async def openapi(self) -> Report:
        """See StatusdApi.openapi."""
        return await self._run(calls.openapi())
