"""Registration, one workload or many: validate, write, start the liveness clock, answer.

POST /v1/workloads and POST /v1/workloads:batch run the same steps; the single route is a batch
of one. Each item is validated exactly as the single route validates its body (the schema's
RegisterRequest, then the status_url policy) before anything is written; valid items are written
in chunks of REGISTER_CHUNK, one database transaction per chunk (statusd.registry.register_many),
then each chunk's PENDING clocks go to Redis in one MULTI per shard. A chunk whose Redis step
failed is retired again (deregistered), as a single registration is: without its PENDING clock
the sweeper would never notice the workload.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncConnection

from statusd import dependencies, liveness, registry, silences, tokens
from statusd.api.error_responses import error_body
from statusd.api.serializers import Liveness, is_stale, synced_flag, workload_out
from statusd.db import each_statement, transaction
from statusd.errors import BadInput, RedisUnavailable, StatusdError, StorageUnavailable
from statusd.hearing import read_hearing
from statusd.lifecycle import Kind, State
from statusd.registry import Registration
from statusd.runtime import Runtime
from statusd.schema.bad_input import parse_body
from statusd.schema.bodies import RegisterBatchEnvelope, RegisterRequest
from statusd.schema.registration_results import (
    RegistrationBatchResult,
    RegistrationCreated,
    RegistrationRefused,
)
from statusd.schema.responses import RegisteredWorkload
from statusd.staleness import Judge
from statusd.sweeper.url_policy import check_status_url

log = structlog.get_logger("statusd.api")

# Items per database transaction: big enough that a batch costs a handful of statements, small
# enough that SQLite's write lock (held for the transaction) never keeps the consumers waiting
# for long.
REGISTER_CHUNK = 500
# status_url checks resolve DNS names (in the loop's thread pool): at most this many at once.
URL_CHECKS_IN_FLIGHT = 16

Outcome = RegisteredWorkload | StatusdError | RedisError  # per item: registered, or why not
UNAVAILABLE = (StorageUnavailable, RedisUnavailable, RedisError)
# The caller's rule for an item's labels (a labelled key registers only what carries its labels);
# raises BadInput for an item it refuses.
Admit = Callable[[Mapping[str, str] | None], None]


async def read_item(rt: Runtime, raw: Any, admit: Admit | None = None) -> Registration:
    """One registration as the single route takes it; raises BadInput / UnsafeStatusURL, or what
    `admit` (the caller's key rules: labels) raises for it."""
    if not isinstance(raw, dict):
        raise BadInput(
            "an item must be a JSON object", field="body", status=422, error="invalid_body"
        )
    reg = parse_body(RegisterRequest, raw)
    if admit is not None:
        admit(reg.labels)
    status_url = reg.status_url or None  # "" means none
    if status_url is not None:
        await check_status_url(status_url, rt.settings.allow_networks)
    return Registration(reg.id, reg.kind, status_url, dict(reg.labels or {}), reg.parent)


def batch_items(body: Mapping[str, Any], max_items: int) -> list[Any]:
    """The batch's items, unread; the envelope's problems are the whole request's 422, and more
    than `max_items` (STATUSD_MAX_BATCH_ITEMS) a 413 that names the limit."""
    items: list[Any] = parse_body(RegisterBatchEnvelope, body).items  # type: ignore[attr-defined]
    if len(items) > max_items:
        raise BadInput(
            f"at most {max_items} items per batch (STATUSD_MAX_BATCH_ITEMS); {len(items)} sent",
            field="items",
            status=413,
            error="too_many_items",
        )
    return items


def _registered(
    rt: Runtime,
    row: Mapping[str, Any],
    active: Sequence[silences.SilenceRecord],
    now: datetime,
    suppressed: Mapping[str, str],
) -> RegisteredWorkload:
    merged = Liveness(None, None)
    out = workload_out(
        row,
        merged,
        stale=is_stale(State.PENDING, merged, row["created_at"], rt.settings, now),
        synced=synced_flag(rt.settings, False),
        silenced=silences.silenced(active, row["id"], row["kind"], row["labels"]),
        suppressed_by=suppressed.get(row["id"]),
    )
    token = tokens.issue(
        rt.settings.secret_bytes, row["id"], Kind(row["kind"]), int(row["generation"])
    )
    return RegisteredWorkload(**dict(out), heartbeat_token=token)


async def register_chunk(rt: Runtime, regs: Sequence[Registration]) -> list[Outcome]:
    """Register `regs` in one transaction; one outcome per item, in order. Raises
    StorageUnavailable / RedisError when the chunk could not be stored (nothing of it stays)."""
    now = datetime.now(UTC)
    # One registration is one atomic statement: no BEGIN / COMMIT round trips around it.
    unit = transaction if len(regs) > 1 else each_statement
    async with unit(rt.engine) as conn:
        answers = await registry.register_many(conn, regs)
        created = [a for a in answers if not isinstance(a, StatusdError)]
        # On the same connection: one checkout per chunk, not two.
        active = await silences.active_in(conn, now) if created else []
        suppressed = await suppressed_children(rt, conn, created, now)
    if created:
        generations = {row["id"]: int(row["generation"]) for row in created}
        try:
            await liveness.on_registered_many(rt.redis, rt.keys, generations, time.time())
        except Exception:
            log.warning("workload.register_liveness_failed", workloads=len(generations))
            await registry.retire(rt.engine, list(generations))
            raise
    return [
        a if isinstance(a, StatusdError) else _registered(rt, a, active, now, suppressed)
        for a in answers
    ]


async def suppressed_children(
    rt: Runtime, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]], now: datetime
) -> dict[str, str]:
    """`suppressed_by` of these rows (statusd.dependencies): child id -> its parent that is down
    now. No Redis round trip unless some row has a parent."""
    watch = rt.ledger.parents
    if watch is None or not any(row.get("parent") for row in rows):
        return {}
    judge = Judge.of(rt.settings, await read_hearing(rt.redis, rt.keys), now.timestamp())
    return await dependencies.suppressed_by(conn, watch, rows, judge)


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    result: RegistrationBatchResult
    status: int  # 200, or 503 when some items could not be stored (retry those)


async def _read_all(
    rt: Runtime, raw_items: Sequence[Any], admit: Admit | None
) -> list[Registration | StatusdError]:
    limit = asyncio.Semaphore(URL_CHECKS_IN_FLIGHT)

    async def one(raw: Any) -> Registration | StatusdError:
        try:
            if isinstance(raw, dict) and raw.get("status_url"):
                async with limit:
                    return await read_item(rt, raw, admit)
            return await read_item(rt, raw, admit)
        except StatusdError as exc:
            return exc

    return list(await asyncio.gather(*(one(raw) for raw in raw_items)))


async def register_batch(
    rt: Runtime, raw_items: Sequence[Any], admit: Admit | None = None
) -> BatchAnswer:
    """Every item validated first, the valid ones written chunk by chunk; results in order.

    Once a chunk finds the database or Redis down, the chunks after it are not tried: their
    items answer 503 too (nothing of them written)."""
    read = await _read_all(rt, raw_items, admit)
    outcomes: list[Outcome | None] = [o if isinstance(o, StatusdError) else None for o in read]
    valid = [(i, o) for i, o in enumerate(read) if isinstance(o, Registration)]
    down: StatusdError | RedisError | None = None
    for start in range(0, len(valid), REGISTER_CHUNK):
        chunk = valid[start : start + REGISTER_CHUNK]
        answers: Sequence[Outcome] = []
        if down is None:
            try:
                answers = await register_chunk(rt, [reg for _, reg in chunk])
            except UNAVAILABLE as exc:
                down = exc
        if down is not None:
            answers = [down] * len(chunk)
        for (index, _), answer in zip(chunk, answers, strict=True):
            outcomes[index] = answer
    results: list[RegistrationCreated | RegistrationRefused] = []
    for outcome in outcomes:
        if isinstance(outcome, RegisteredWorkload):
            results.append(RegistrationCreated(status=201, workload=outcome))
            continue
        if outcome is None:
            raise RuntimeError("a batch item was left without an outcome")
        mapped = error_body(outcome)
        if mapped is None:  # not one of ours: a bug, answered by the error middleware
            raise outcome
        status, body = mapped
        results.append(RegistrationRefused(status=status, **body))
    registered = sum(1 for r in results if isinstance(r, RegistrationCreated))
    log.info("workload.registered_batch", registered=registered, refused=len(results) - registered)
    result = RegistrationBatchResult(
        registered=registered, refused=len(results) - registered, results=results
    )
    return BatchAnswer(result, 503 if any(r.status == 503 for r in results) else 200)
