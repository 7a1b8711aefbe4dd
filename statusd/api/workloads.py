"""Workload routes of the status API: register, read, list, drive, history, deregister.

Every handler validates its whole input before touching storage (statusd.api.validation), so bad
input never writes. State changes go through statusd.transitions.apply_observation only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from statusd import flaps, liveness, registry, silences, tokens
from statusd.api import validation
from statusd.api.auth import require_api_token, require_api_token_or_cookie
from statusd.api.errors import json_response, model_response
from statusd.api.serializers import (
    Liveness,
    is_stale,
    synced_flag,
    transition_out,
    workload_json,
    workload_out,
)
from statusd.api.validation import path_workload_id
from statusd.app_keys import RUNTIME
from statusd.db import reading
from statusd.errors import TransitionRefused, UnknownWorkload
from statusd.hearing import Hearing, read_hearing
from statusd.lifecycle import Kind, Source, State
from statusd.models import Transition, Workload
from statusd.runtime import Runtime
from statusd.schema import responses
from statusd.schema.bad_input import parse_body, parse_query
from statusd.schema.bodies import RegisterRequest, TransitionRequest
from statusd.schema.queries import HistoryQuery, WorkloadQuery, encode_cursor
from statusd.sweeper.url_policy import check_status_url
from statusd.sync.status import unsynced_workloads
from statusd.transitions import Observation, Outcome, apply_observation

log = structlog.get_logger("statusd.api")

_W = Workload.__table__  # type: ignore[attr-defined]
_T = Transition.__table__  # type: ignore[attr-defined]

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
    """Per-page flags read from the database: unsynced, flapping and silenced ids."""

    unsynced: set[str]
    flapping: set[str]
    silenced: set[str]


async def _marks(
    rt: Runtime, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]], now: datetime
) -> _Marks:
    ids = [r["id"] for r in rows]
    return _Marks(
        unsynced=await unsynced_workloads(conn, ids),
        flapping=await flaps.flapping_ids(conn, rows, rt.ledger.flap_policy, now),
        silenced=silences.silenced_ids(await silences.active_in(conn, now), rows),
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
        stale = is_stale(State(row["state"]), merged, row["created_at"], rt.settings, now, hearing)
        out.append(
            workload_json(
                row,
                merged,
                stale=stale,
                synced=synced_flag(rt.settings, wid in marks.unsynced),
                flapping=wid in marks.flapping,
                silenced=wid in marks.silenced,
            )
        )
    return out


async def load_workload(rt: Runtime, workload_id: str) -> dict[str, Any]:
    """One registered workload as the API shows it. Raises UnknownWorkload."""
    now = datetime.now(UTC)
    async with reading(rt.engine) as conn:
        row = (
            await conn.execute(select(_W).where(_W.c.id == workload_id, _W.c.deleted_at.is_(None)))
        ).first()
        if row is None:
            raise UnknownWorkload(f"workload {workload_id!r} is not registered")
        rows = [dict(row._mapping)]
        marks = await _marks(rt, conn, rows, now)
    live = await _redis_liveness(rt, [workload_id])
    hearing = await read_hearing(rt.redis, rt.keys)
    return _render(rt, rows, live, marks, now, hearing)[0]


@require_api_token
async def register_workload(request: web.Request) -> web.Response:
    """POST /v1/workloads -> 201 with the workload and its heartbeat_token."""
    rt = _runtime(request)
    body = await validation.read_json_object(request, rt.settings.max_body_bytes)
    reg = parse_body(RegisterRequest, body)
    status_url = reg.status_url or None  # "" means none
    if status_url is not None:
        await check_status_url(status_url, rt.settings.allow_networks)
    row = await registry.register(
        rt.engine, reg.id, reg.kind, status_url=status_url, labels=dict(reg.labels or {})
    )
    try:
        await liveness.on_registered(
            rt.redis,
            rt.keys,
            reg.id,
            time.time(),
            generation=int(row["generation"]),
            shards=rt.settings.stream_shards,
        )
    except Exception:
        # Without its PENDING clock the sweeper would never notice it: undo, let the caller retry.
        log.warning("workload.register_liveness_failed", workload_id=reg.id)
        await registry.deregister(rt.engine, reg.id)
        raise
    log.info(
        "workload.registered", workload_id=reg.id, kind=reg.kind.value, generation=row["generation"]
    )
    now = datetime.now(UTC)
    merged = Liveness(None, None)
    async with reading(rt.engine) as conn:
        silenced = silences.silenced_ids(await silences.active_in(conn, now), [row])
    out = workload_out(
        row,
        merged,
        stale=is_stale(State.PENDING, merged, row["created_at"], rt.settings, now),
        synced=synced_flag(rt.settings, False),
        silenced=reg.id in silenced,
    )
    token = tokens.issue(
        rt.settings.secret_bytes, reg.id, Kind(row["kind"]), int(row["generation"])
    )
    registered = responses.RegisteredWorkload(**dict(out), heartbeat_token=token)
    return model_response(registered, 201, headers={"Location": f"/v1/workloads/{reg.id}"})


@require_api_token
async def get_workload(request: web.Request) -> web.Response:
    """GET /v1/workloads/{id}."""
    return json_response(await load_workload(_runtime(request), path_workload_id(request)))


async def list_page(rt: Runtime, q: WorkloadQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One page of workloads matching `q` and the cursor of the next page (None at the end).

    Keyset pagination on id (WHERE id > cursor ORDER BY id): stable while rows come and go, no
    OFFSET scans. `stale` lives in Redis, so that filter runs on each SQL page; to still fill the
    page, up to STALE_SCAN_PAGES full pages (`limit` rows each: one SQL query, one Redis round trip
    and one outbox query per page) are scanned before a short page is returned. When the page fills
    part-way through a scanned page, the cursor is the last row returned, so the rest is scanned
    again next time; otherwise it is the last row scanned.
    """
    query = select(_W).where(_W.c.deleted_at.is_(None))
    if q.kind is not None:
        query = query.where(_W.c.kind == q.kind)
    if q.state is not None:
        query = query.where(_W.c.state == q.state)
    for key, value in q.labels.items():
        query = query.where(_W.c.labels[key].as_string() == value)
    if q.id_prefix is not None:
        # substr, not LIKE: SQLite's LIKE ignores case, and ids are case-sensitive.
        query = query.where(func.substr(_W.c.id, 1, len(q.id_prefix)) == q.id_prefix)
    query = query.order_by(_W.c.id)

    items: list[dict[str, Any]] = []
    after = q.after
    budget = q.limit * (STALE_SCAN_PAGES if q.stale is not None else 1)
    scanned = 0
    more = False
    now = datetime.now(UTC)
    hearing = await read_hearing(rt.redis, rt.keys)
    async with reading(rt.engine) as conn:
        while len(items) < q.limit and scanned < budget:
            page_query = query if after is None else query.where(_W.c.id > after)
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


@require_api_token_or_cookie  # read-only: the status page's fleet list uses it with its cookie
async def list_workloads(request: web.Request) -> web.Response:
    """GET /v1/workloads: filters, keyset pagination on id (opaque cursor, never OFFSET)."""
    items, next_cursor = await list_page(
        _runtime(request), parse_query(WorkloadQuery, request.query)
    )
    return json_response({"items": items, "next_cursor": next_cursor})


@require_api_token
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


@require_api_token
async def post_transition(request: web.Request) -> web.Response:
    """POST /v1/workloads/{id}/transitions: a backend-driven change, judged by the lifecycle."""
    rt = _runtime(request)
    workload_id = path_workload_id(request)
    body = await validation.read_json_object(request, rt.settings.max_body_bytes)
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


@require_api_token
async def list_transitions(request: web.Request) -> web.Response:
    """GET /v1/workloads/{id}/transitions: history, oldest first (?after=<transition id>&limit=)."""
    rt = _runtime(request)
    workload_id = path_workload_id(request)
    query = parse_query(HistoryQuery, request.query)
    after, limit = query.after, query.limit
    async with reading(rt.engine) as conn:
        exists = (await conn.execute(select(_W.c.id).where(_W.c.id == workload_id))).first()
        if exists is None:  # deregistered workloads keep their history; never-registered ones 404
            raise UnknownWorkload(f"workload {workload_id!r} was never registered")
        rows = [
            dict(r._mapping)
            for r in await conn.execute(
                select(_T)
                .where(_T.c.workload_id == workload_id, _T.c.id > after)
                .order_by(_T.c.id)
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
    app.router.add_get("/v1/workloads", list_workloads, allow_head=False)
    app.router.add_get("/v1/workloads/{id}", get_workload, allow_head=False)
    app.router.add_delete("/v1/workloads/{id}", delete_workload)
    app.router.add_get("/v1/workloads/{id}/transitions", list_transitions, allow_head=False)
    app.router.add_post("/v1/workloads/{id}/transitions", post_transition)
