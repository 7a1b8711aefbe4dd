"""Each API operation as data, independent of how it is sent: the path, the query, the body, the
statuses that mean success and how to read the answer. `StatusdApi` (httpx, blocking) and
`AsyncStatusdApi` (httpx, asyncio) only send these, so both behave the same by construction."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from statusd_client.api.errors import Unavailable
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

T = TypeVar("T")
Query = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    route: Route
    parse: Callable[[Any], T]
    path_params: Mapping[str, str] = field(default_factory=dict)
    query: Query = ()
    body: Any = None
    # A 503 whose body still holds one result per item (the batch route: the items marked 503
    # were not stored, the others were): read as an answer, not raised.
    partial_on_503: bool = False

    @property
    def path(self) -> str:
        path = self.route.path
        for name, value in self.path_params.items():
            path = path.replace("{" + name + "}", quote(value, safe=""))
        return path


@dataclass(frozen=True)
class RetryPolicy:
    """How reads ride out a 503 or a dropped connection: up to `attempts` tries, each wait the
    server's Retry-After when it gave one, else jittered exponential backoff, at most `max_wait`."""

    attempts: int = 4
    backoff: float = 0.5
    max_wait: float = 30.0

    def wait(self, attempt: int, error: Unavailable) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, self.max_wait)
        return min(self.max_wait, self.backoff * 2.0**attempt * random.uniform(0.5, 1.0))


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next: str | None  # cursor (workloads) or transition id (history) of the next page


def _query(**values: Any) -> Query:
    """Query parameters, leaving out None; a list repeats its parameter; booleans lowercased."""
    out: list[tuple[str, str]] = []
    for name, value in values.items():
        for one in value if isinstance(value, (list, tuple)) else [value]:
            if one is None:
                continue
            out.append((name, str(one).lower() if isinstance(one, bool) else str(one)))
    return tuple(out)


def _labels(labels: Mapping[str, str] | None) -> list[str]:
    return [f"{k}:{v}" for k, v in (labels or {}).items()]


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("give a timezone-aware datetime (statusd needs the offset)")
    return value.isoformat()


def _report(doc: Any) -> Report:
    return Report(dict(doc))


def register(
    workload_id: str,
    kind: str,
    status_url: str | None,
    labels: Mapping[str, str] | None,
    parent: str | None = None,
) -> Call[Registered]:
    body = Registration(workload_id, kind, status_url, labels, parent).to_json()
    return Call(ROUTES["register"], Registered.from_json, body=body)


def register_batch(items: list[Registration]) -> Call[list[RegistrationResult]]:
    def parse(doc: Any) -> list[RegistrationResult]:
        results = doc["results"]
        if len(results) != len(items):
            raise ValueError(f"{len(items)} registrations sent, {len(results)} results received")
        return [RegistrationResult.from_item(i.id, r) for i, r in zip(items, results)]

    return Call(ROUTES["register_many"], parse, body={"items": [item.to_json() for item in items]})


def registrations(items: Iterable[Registration | Mapping[str, Any]]) -> list[Registration]:
    """`register_many`'s input: Registration values, or dicts with register()'s fields."""
    out = []
    for item in items:
        if isinstance(item, Registration):
            out.append(item)
        else:
            out.append(
                Registration(
                    str(item["id"]),
                    str(item["kind"]),
                    item.get("status_url"),
                    item.get("labels"),
                    item.get("parent"),
                )
            )
    return out


def get(workload_id: str) -> Call[Workload]:
    return Call(ROUTES["get"], Workload.from_json, {"id": workload_id})


def list_page(
    *,
    kind: str | None,
    state: str | None,
    stale: bool | None,
    labels: Mapping[str, str] | None,
    id_prefix: str | None,
    page_size: int,
    cursor: str | None,
) -> Call[Page[Workload]]:
    def parse(doc: Any) -> Page[Workload]:
        return Page([Workload.from_json(w) for w in doc["items"]], doc.get("next_cursor"))

    query = _query(
        kind=kind,
        state=state,
        stale=stale,
        label=_labels(labels),
        id_prefix=id_prefix,
        limit=page_size,
        cursor=cursor,
    )
    return Call(ROUTES["list"], parse, query=query)


def history_page(workload_id: str, *, after: int, page_size: int) -> Call[Page[Transition]]:
    def parse(doc: Any) -> Page[Transition]:
        after = doc.get("next_after")
        items = [Transition.from_json(t) for t in doc["items"]]
        return Page(items, None if after is None else str(after))

    query = _query(after=after, limit=page_size)
    return Call(ROUTES["history"], parse, {"id": workload_id}, query)


def transition(workload_id: str, to: str, reason: str | None) -> Call[TransitionResult]:
    body: dict[str, Any] = {"to": to}
    if reason is not None:
        body["reason"] = reason
    return Call(ROUTES["transition"], TransitionResult.from_json, {"id": workload_id}, body=body)


def deregister(workload_id: str) -> Call[Deleted]:
    return Call(ROUTES["deregister"], Deleted.from_json, {"id": workload_id})


def create_silence(
    *,
    kind: str | None,
    label: tuple[str, str] | None,
    workload_id: str | None,
    until: datetime,
    reason: str,
) -> Call[Silence]:
    match = {"kind": kind, "id": workload_id, "label": None if label is None else ":".join(label)}
    body = {
        "match": {k: v for k, v in match.items() if v is not None},
        "until": _iso(until),
        "reason": reason,
    }
    return Call(ROUTES["create_silence"], Silence.from_json, body=body)


def silences(active: bool | None) -> Call[list[Silence]]:
    def parse(doc: Any) -> list[Silence]:
        return [Silence.from_json(s) for s in doc["items"]]

    return Call(ROUTES["silences"], parse, query=_query(active=active))


def delete_silence(silence_id: str) -> Call[Deleted]:
    return Call(ROUTES["delete_silence"], Deleted.from_json, {"id": silence_id})


def create_maintenance(
    *,
    kind: str | None,
    label: tuple[str, str] | None,
    workload_id: str | None,
    reason: str,
    start: datetime | None,
    end: datetime | None,
    schedule: str | None,
    duration_s: int | None,
    timezone: str | None,
) -> Call[Maintenance]:
    match = {"kind": kind, "id": workload_id, "label": None if label is None else ":".join(label)}
    fields: dict[str, Any] = {
        "start": None if start is None else _iso(start),
        "end": None if end is None else _iso(end),
        "schedule": schedule,
        "duration_s": duration_s,
        "timezone": timezone,
    }
    body = {
        "match": {k: v for k, v in match.items() if v is not None},
        **{k: v for k, v in fields.items() if v is not None},
        "reason": reason,
    }
    return Call(ROUTES["create_maintenance"], Maintenance.from_json, body=body)


def maintenances() -> Call[list[Maintenance]]:
    def parse(doc: Any) -> list[Maintenance]:
        return [Maintenance.from_json(m) for m in doc["items"]]

    return Call(ROUTES["maintenances"], parse)


def maintenance(maintenance_id: str) -> Call[Maintenance]:
    return Call(ROUTES["maintenance"], Maintenance.from_json, {"id": maintenance_id})


def delete_maintenance(maintenance_id: str) -> Call[Deleted]:
    return Call(ROUTES["delete_maintenance"], Deleted.from_json, {"id": maintenance_id})


def resume_point() -> Call[int]:
    """The id `/v1/events` would start after now (every transition up to it is committed)."""
    return Call(
        ROUTES["recent_transitions"], lambda doc: int(doc["last_id"]), query=_query(limit=1)
    )


def watch_query(kind: str | None, workload_id: str | None) -> Query:
    return _query(kind=kind, workload_id=workload_id)


def recent_transitions(
    limit: int | None, kind: str | None, workload_id: str | None
) -> Call[Report]:
    query = _query(limit=limit, kind=kind, workload_id=workload_id)
    return Call(ROUTES["recent_transitions"], _report, query=query)


def stale_report(
    kinds: Iterable[str], labels: Mapping[str, str] | None, older_than: str | None, fmt: str
) -> Call[Any]:
    query = _query(kind=list(kinds), label=_labels(labels), older_than=older_than, format=fmt)
    return Call(ROUTES["stale_report"], _report if fmt == "json" else str, query=query)


def summary() -> Call[Report]:
    return Call(ROUTES["summary"], _report)


def workload_story(workload_id: str) -> Call[Report]:
    return Call(ROUTES["workload_story"], _report, {"id": workload_id})


def fleet_history(window: str | None, step: str | None, kind: str | None) -> Call[Report]:
    query = _query(window=window, step=step, kind=kind)
    return Call(ROUTES["fleet_history"], _report, query=query)


def selfwatch() -> Call[Report]:
    return Call(ROUTES["selfwatch"], _report)


def health() -> Call[Report]:
    return Call(ROUTES["health"], _report)


def readiness() -> Call[Report]:
    return Call(ROUTES["readiness"], _report)


def openapi() -> Call[Report]:
    return Call(ROUTES["openapi"], _report)


def create_key(
    name: str, scope: str, labels: Mapping[str, str] | None, expires_in: str | None
) -> Call[CreatedKey]:
    body: dict[str, Any] = {"name": name, "scope": scope}
    if labels is not None:
        body["labels"] = dict(labels)
    if expires_in is not None:
        body["expires_in"] = expires_in
    return Call(ROUTES["create_key"], CreatedKey.from_json, body=body)


def keys() -> Call[list[ApiKey]]:
    return Call(ROUTES["keys"], lambda doc: [ApiKey.from_json(k) for k in doc["items"]])


def revoke_key(key_id: str) -> Call[ApiKey]:
    return Call(ROUTES["revoke_key"], ApiKey.from_json, {"id": key_id})


def audit_page(
    *,
    actor: str | None,
    action: str | None,
    target: str | None,
    since: datetime | None,
    page_size: int,
    cursor: str | None,
) -> Call[Page[AuditEntry]]:
    def parse(doc: Any) -> Page[AuditEntry]:
        return Page([AuditEntry.from_json(e) for e in doc["items"]], doc.get("next_cursor"))

    query = _query(
        actor=actor,
        action=action,
        target=target,
        since=None if since is None else _iso(since),
        limit=page_size,
        cursor=cursor,
    )
    return Call(ROUTES["audit"], parse, query=query)


def prune(dry_run: bool) -> Call[Report]:
    return Call(ROUTES["prune"], _report, body={"dry_run": dry_run})


def availability(
    *,
    kinds: Iterable[str],
    labels: Mapping[str, str] | None,
    ids: Iterable[str],
    start: datetime | None,
    end: datetime | None,
    group_by: str | None,
    fmt: str,
) -> Call[Any]:
    query = _query(
        kind=list(kinds),
        label=_labels(labels),
        id=list(ids),
        to=None if end is None else _iso(end),
        group_by=group_by,
        format=fmt,
    )
    if start is not None:  # `from` is a Python keyword: added by hand
        query = (("from", _iso(start)), *query)
    return Call(ROUTES["availability"], _report if fmt == "json" else str, query=query)


def has_route(document: Report, route: Route) -> bool:
    """Whether the served OpenAPI document lists `route`."""
    return route.method.lower() in document.data.get("paths", {}).get(route.path, {})
