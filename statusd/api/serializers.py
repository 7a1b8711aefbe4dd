"""Rows -> the API's response models (statusd.schema.responses), and the one definition of
`stale` the API shows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from statusd.hearing import Hearing
from statusd.lifecycle import State
from statusd.schema import responses
from statusd.settings import Settings
from statusd.staleness import Facts, Judge


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class Liveness:
    """Sign of life merged from the DB row (persisted) and Redis (live): the newest of each wins."""

    last_seen_at: datetime | None
    last_seq: int | None

    @classmethod
    def merge(
        cls, row: Mapping[str, Any], redis_seen: float | None, redis_seq: int | None
    ) -> Liveness:
        db_seen: datetime | None = row.get("last_seen_at")
        live = datetime.fromtimestamp(redis_seen, UTC) if redis_seen is not None else None
        seen = max((t for t in (db_seen, live) if t is not None), default=None)
        seqs = [s for s in (row.get("last_seq"), redis_seq) if s is not None]
        return cls(seen, max(seqs) if seqs else None)


def is_stale(
    state: State,
    liveness: Liveness,
    registered_at: datetime,
    settings: Settings,
    now: datetime,
    hearing: Hearing | None = None,
    quiet_until: float | None = None,
) -> bool:
    """The API's `stale`: statusd.staleness says so (the stale report asks the same rule).
    With `hearing`: the paced silence allowed, and nothing stale by silence while we were deaf;
    `quiet_until`: a maintenance window's excuse (statusd.maintenance)."""
    seen = liveness.last_seen_at.timestamp() if liveness.last_seen_at is not None else None
    judge = Judge.of(settings, hearing, now.timestamp())
    facts = Facts(state, seen, registered_at.timestamp(), quiet_until=quiet_until)
    return judge.staleness(facts) is not None


def synced_flag(settings: Settings, waiting: bool) -> bool | None:
    """The API's `synced`: None when no main API is configured (nothing is synced, and nothing
    is behind either: rows are kept until one is), else whether no transition waits for it."""
    if settings.main_api_url is None:
        return None
    return not waiting


def workload_out(
    row: Mapping[str, Any],
    liveness: Liveness,
    *,
    stale: bool,
    synced: bool | None,
    flapping: bool = False,
    silenced: bool = False,
    suppressed_by: str | None = None,
) -> responses.Workload:
    """The public shape of a workload (GET /v1/workloads/{id}, list items, registration)."""
    return responses.Workload(
        id=row["id"],
        kind=row["kind"],
        state=row["state"],
        labels=dict(row.get("labels") or {}),
        status_url=row.get("status_url"),
        last_seen_at=iso(liveness.last_seen_at),
        last_seq=liveness.last_seq,
        state_changed_at=iso(row["state_changed_at"]) or "",
        created_at=iso(row["created_at"]) or "",
        stale=stale,
        synced=synced,
        generation=int(row["generation"]),
        flapping=flapping,
        silenced=silenced,
        parent=row.get("parent"),
        suppressed_by=suppressed_by,
    )


def transition_out(row: Mapping[str, Any]) -> responses.Transition:
    """One history row (GET/POST /v1/workloads/{id}/transitions)."""
    return responses.Transition(
        id=int(row["id"]),
        workload_id=row["workload_id"],
        generation=int(row["generation"]) if row.get("generation") is not None else None,
        kind=row["kind"],
        from_state=row["from_state"],
        to=row["to_state"],
        source=row["source"],
        reason=row.get("reason"),
        actor=row.get("actor"),
        seq=row.get("seq"),
        observed_at=iso(row["observed_at"]) or "",
        recorded_at=iso(row["recorded_at"]) or "",
    )


def transition_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """`transition_out` as JSON-ready data (the feed, the story and the CLI embed it)."""
    return transition_out(row).model_dump(mode="json")
