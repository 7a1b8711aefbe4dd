"""Workload routes of the status API: register, read, list, drive, history, deregister.

Every handler validates its whole input before touching storage (statusd.api.request_checks), so bad
input never writes. State changes go through statusd.transitions.apply_observation only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from statusd import flaps, liveness, maintenance, registry, silences
from statusd.access.audit import AuditAction
from statusd.access.scopes import Scope
from statusd.api import registering, request_checks
from statusd.api.auth import check_labels, guard, key_labels, require_labels
from statusd.api.error_responses import (
    RETRY_AFTER_S,
    created_response,
    json_response,
    model_response,
)
from statusd.api.request_checks import path_workload_id
from statusd.api.serializers import Liveness, is_stale, synced_flag, transition_out, workload_out
from statusd.app_keys import RUNTIME
from statusd.db import reading
from statusd.errors import TransitionRefused, UnknownWorkload
from statusd.hearing import Hearing, read_hearing
from statusd.lifecycle import Source, State
from statusd.runtime import Runtime
from statusd.schema import responses
from statusd.schema.bad_input import parse_body, parse_query
from statusd.schema.bodies import TransitionRequest
from statusd.schema.queries import HistoryQuery, WorkloadQuery, encode_cursor
from statusd.sync.status import unsynced_workloads
from statusd.tables import TRANSITIONS, WORKLOADS
from statusd.transitions import Observation, Outcome, apply_observation

log = structlog.get_logger("statusd.api")


# A `stale` filter is applied after the SQL page (staleness lives in Redis); to still return full
# pages, the list scans ahead up to this many pages' worth of rows before answering a short page.
STALE_SCAN_PAGES = 10


def _runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


async def _redis_liveness(
    rt: Runtime, ids: Sequence[str]
) -> dict[str, tuple[float | None, int | None]]:
    """Live last-seen (unix s) and newest seq for each id, in one round trip."""
    if not ids:
        return {}
    scores, seqs = await asyncio.gather(
        liveness.scores(rt.redis, rt.keys, rt.keys.last_seen, ids),
        liveness.seqs(rt.redis, rt.keys, ids),
    )
    return {wid: (score, seq) for wid, score, seq in zip(ids, scores, seqs, strict=True)}


@dataclass(frozen=True, slots=True)
class _Marks:
    """Per-page flags read from the database: unsynced, flapping and silenced ids, the children
    whose parent is down (statusd.dependencies), and until when maintenance excuses each one's
    silence."""

    unsynced: set[str]
    flapping: set[str]
    silenced: set[str]
    suppressed: dict[str, str]
    excused: dict[str, float] = field(default_factory=dict)


async def _marks(
    rt: Runtime, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]], now: datetime
) -> _Marks:
    ids = [r["id"] for r in rows]
    windows = maintenance.Excuses.of(await maintenance.all_in(conn), now)
    excused = {
        r["id"]: until
        for r in rows
        if (until := windows.until(r["id"], r["kind"], r.get("labels") or {})) is not None
    }
    return _Marks(
        unsynced=await unsynced_workloads(conn, ids),
        flapping=await flaps.flapping_ids(conn, rows, rt.ledger.flap_policy, now),
        silenced=silences.silenced_ids(await silences.active_in(conn, now), rows),
        suppressed=await registering.suppressed_children(rt, conn, rows, now),
        excused=excused,
    )


def _render(
    rt: Runtime,
    rows: Iterable[Mapping[str, Any]],
    live: Mapping[str, tuple[float | None, int | None]],
    marks: _Marks,
    now: datetime,
    hearing: Hearing | None = None,
) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        wid = row["id"]
        seen, seq = live.get(wid, (None, None))
        merged = Liveness.merge(row, seen, seq)
        stale = is_stale(
            State(row["state"]),
            merged,
            row["created_at"],
            rt.settings,
            now,
            hearing,
            marks.excused.get(wid),
        )
        out.append(
            workload_out(
                row,
                merged,
                stale=stale,
                synced=synced_flag(rt.settings, wid in marks.unsynced),
                flapping=wid in marks.flapping,
                silenced=wid in marks.silenced,
                suppressed_by=marks.suppressed.get(wid),
            ).model_dump(mode="json")
        )
    return out


async def load_workload(rt: Runtime, workload_id: str) -> dict[str, Any]:
    """One registered workload as the API shows it. Raises UnknownWorkload."""
    now = datetime.now(UTC)
    async with reading(rt.engine) as conn:
        row = (
            await conn.execute(
                select(WORKLOADS).where(
                    WORKLOADS.c.id == workload_id, WORKLOADS.c.deleted_at.is_(None)
                )
            )
        ).first()
        if row is None:
            raise UnknownWorkload(f"workload {workload_id!r} is not registered")
        rows = [dict(row._mapping)]
        marks = await _marks(rt, conn, rows, now)
    live = await _redis_liveness(rt, [workload_id])
    hearing = await read_hearing(rt.redis, rt.keys)
    return _render(rt, rows, live, marks, now, hearing)[0]


@guard(Scope.WRITE, action=AuditAction.WORKLOAD_REGISTER)
async def register_workload(request: web.Request) -> web.Response:
    """POST /v1/workloads -> 201 with the workload and its heartbeat_token."""
    rt = _runtime(request)
    body = await request_checks.read_json_object(request, rt.settings.max_body_bytes)
    reg = await registering.read_item(
        rt, body, lambda labels: require_labels(request, str(body.get("id", "")), labels)
    )
    [answer] = await registering.register_chunk(rt, [reg])
    if not isinstance(answer, responses.RegisteredWorkload):
        raise answer
    log.info(
        "workload.registered", workload_id=reg.id, kind=reg.kind.value, generation=answer.generation
    )
    return created_response(answer, f"/v1/workloads/{reg.id}")


@guard(Scope.WRITE, action=AuditAction.WORKLOAD_BATCH_REGISTER)
async def register_workloads(request: web.Request) -> web.Response:
    """POST /v1/workloads:batch -> one result per item, in order (201 with the workload and its
    heartbeat_token, or the single route's error body); 503 when some could not be stored."""
    rt = _runtime(request)
    max_items = rt.settings.max_batch_items
    body = await request_checks.read_json_object(request, rt.settings.max_body_bytes * max_items)
    answer = await registering.register_batch(
        rt,
        registering.batch_items(body, max_items),
        lambda labels: check_labels(request, labels),
    )
    headers = {"Retry-After": RETRY_AFTER_S} if answer.status == 503 else None
    return model_response(answer.result, answer.status, headers=headers)


@guard(Scope.READ, workload_path=True)
async def get_workload(request: web.Request) -> web.Response:
    """GET /v1/workloads/{id}."""
    return json_response(await load_workload(_runtime(request), path_workload_id(request)))


async def list_page(
    rt: Runtime, q: WorkloadQuery, within_labels: Mapping[str, str] | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of workloads matching `q` and the cursor of the next page (None at the end).

    Keyset pagination on id (WHERE id > cursor ORDER BY id): stable while rows come and go, no
    OFFSET scans. `stale` lives in Redis, so that filter runs on each SQL page; to still fill the
    page, up to STALE_SCAN_PAGES full pages (`limit` rows each: one SQL query, one Redis round trip
    and one outbox query per page) are scanned before a short page is returned. When the page fills
    part-way through a scanned page, the cursor is the last row returned, so the rest is scanned
    again next time; otherwise it is the last row scanned. `within_labels` (the caller's key's) must
    all match too.
    """
    query = select(WORKLOADS).where(WORKLOADS.c.deleted_at.is_(None))
    if q.kind is not None:
        query = query.where(WORKLOADS.c.kind == q.kind)
    if q.state is not None:
        query = query.where(WORKLOADS.c.state == q.state)
    for key, value in [*q.labels.items(), *(within_labels or {}).items()]:
        query = query.where(WORKLOADS.c.labels[key].as_string() == value)
    if q.id_prefix is not None:
        # substr, not LIKE: SQLite's LIKE ignores case, and ids are case-sensitive.
        query = query.where(func.substr(WORKLOADS.c.id, 1, len(q.id_prefix)) == q.id_prefix)
    query = query.order_by(WORKLOADS.c.id)

    items: list[dict[str, Any]] = []
    after = q.after
    budget = q.limit * (STALE_SCAN_PAGES if q.stale is not None else 1)
    scanned = 0
    more = False
    now = datetime.now(UTC)
    hearing = await read_hearing(rt.redis, rt.keys)
    async with reading(rt.engine) as conn:
        while len(items) < q.limit and scanned < budget:
            page_query = query if after is None else query.where(WORKLOADS.c.id > after)
            # One row more than a page tells whether another exists without a COUNT.
            fetched = [dict(r._mapping) for r in await conn.execute(page_query.limit(q.limit + 1))]
            rows, more = fetched[: q.limit], len(fetched) > q.limit
            if not rows:
                break
            ids = [r["id"] for r in rows]
            rendered = _render(
                rt,
                rows,
                await _redis_liveness(rt, ids),
                await _marks(rt, conn, rows, now),
                now,
                hearing,
            )
            scanned += len(rows)
            for index, item in enumerate(rendered):
                after = item["id"]
                if q.stale is None or item["stale"] is q.stale:
                    items.append(item)
                    if len(items) == q.limit:
                        more = more or index < len(rendered) - 1  # rows left in this page
                        break
            if not more:
                break
    return items, encode_cursor(after) if more and after is not None else None


@guard(Scope.READ, cookie=True)  # the status page's fleet list uses it with its cookie
async def list_workloads(request: web.Request) -> web.Response:
    """GET /v1/workloads: filters, keyset pagination on id (opaque cursor, never OFFSET)."""
    items, next_cursor = await list_page(
        _runtime(request), parse_query(WorkloadQuery, request.query), key_labels(request)
    )
    return json_response({"items": items, "next_cursor": next_cursor})


@guard(Scope.WRITE, action=AuditAction.WORKLOAD_DEREGISTER, workload_path=True)
async def delete_workload(request: web.Request) -> web.Response:
    """DELETE /v1/workloads/{id}: stop tracking it; history stays."""
    rt = _runtime(request)
    workload_id = path_workload_id(request)
    row = await registry.deregister(rt.engine, workload_id)
    await liveness.forget(rt.redis, rt.keys, workload_id, shards=rt.settings.stream_shards)
    log.info("workload.deregistered", workload_id=workload_id)
    return model_response(
        responses.Deleted(id=workload_id, deleted_at=row["deleted_at"].isoformat())
    )


@guard(Scope.WRITE, action=AuditAction.WORKLOAD_TRANSITION, workload_path=True)
async def post_transition(request: web.Request) -> web.Response:
    """POST /v1/workloads/{id}/transitions: a backend-driven change, judged by the lifecycle."""
    rt = _runtime(request)
    workload_id = path_workload_id(request)
    body = await request_checks.read_json_object(request, rt.settings.max_body_bytes)
    wanted = parse_body(TransitionRequest, body)
    result = await apply_observation(
        rt.ledger,
        Observation(workload_id, wanted.to, Source.API, reason=wanted.reason, actor="api"),
    )
    if result.outcome is Outcome.REFUSED:
        raise TransitionRefused(
            f"{workload_id}: {result.state.value} -> {wanted.to.value} refused ({result.rule})",
            rule=result.rule,
        )
    transition = None
    if result.outcome is Outcome.APPLIED and result.transition is not None:
        # The applied record carries every history field: no read-back of the committed row.
        transition = transition_out(asdict(result.transition))
    return model_response(
        responses.TransitionResult(
            outcome=result.outcome.value, state=result.state, transition=transition
        )
    )


@guard(Scope.READ, workload_path=True)
async def list_transitions(request: web.Request) -> web.Response:
    """GET /v1/workloads/{id}/transitions: history, oldest first (?after=<transition id>&limit=)."""
    rt = _runtime(request)
    workload_id = path_workload_id(request)
    query = parse_query(HistoryQuery, request.query)
    after, limit = query.after, query.limit
    async with reading(rt.engine) as conn:
        exists = (
            await conn.execute(select(WORKLOADS.c.id).where(WORKLOADS.c.id == workload_id))
        ).first()
        if exists is None:  # deregistered workloads keep their history; never-registered ones 404
            raise UnknownWorkload(f"workload {workload_id!r} was never registered")
        rows = [
            dict(r._mapping)
            for r in await conn.execute(
                select(TRANSITIONS)
                .where(TRANSITIONS.c.workload_id == workload_id, TRANSITIONS.c.id > after)
                .order_by(TRANSITIONS.c.id)
                .limit(limit + 1)
            )
        ]
    more = len(rows) > limit
    items = [transition_out(r) for r in rows[:limit]]
    return model_response(
        responses.TransitionPage(items=items, next_after=items[-1].id if more and items else None)
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/workloads", register_workload)
    app.router.add_post("/v1/workloads:batch", register_workloads)
    app.router.add_get("/v1/workloads", list_workloads, allow_head=False)
    app.router.add_get("/v1/workloads/{id}", get_workload, allow_head=False)
    app.router.add_delete("/v1/workloads/{id}", delete_workload)
    app.router.add_get("/v1/workloads/{id}/transitions", list_transitions, allow_head=False)
    app.router.add_post("/v1/workloads/{id}/transitions", post_transition)
