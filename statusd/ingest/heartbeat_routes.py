"""The ingest hot path: `POST /v1/heartbeats` and `POST /v1/heartbeats:batch`.

Per request: size cap, HMAC token check, strict field check (all pure Python, ~5 us), then the
append through the group-commit writer. No SQL, no per-request Redis round trip of its own.
Every answer is JSON: 202 stored, 4xx naming the problem (nothing appended), 503 + Retry-After
when Redis did not confirm the append. Nothing here raises to the framework (never a 500).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from statusd import metrics, tokens
from statusd.errors import BadInput
from statusd.hearing import Pace
from statusd.ingest.heartbeat_checks import (
    CheckedHeartbeat,
    check_batch_item,
    check_heartbeat,
    claims_from_header,
    decode_json,
)
from statusd.ingest.writer import NotStored, StreamWriter

HEARTBEATS_PATH = "/v1/heartbeats"
BATCH_PATH = "/v1/heartbeats:batch"  # aiohttp takes the colon literally (a plain resource)
RETRY_AFTER_S = "1"

_REASONS = {  # error code -> HEARTBEATS_REJECTED reason
    "unauthorized": "unauthorized",
    "forbidden": "forbidden",
    "body_too_large": "too_large",
}
_LATENCY_SINGLE = metrics.INGEST_LATENCY.labels(endpoint="heartbeats")
_LATENCY_BATCH = metrics.INGEST_LATENCY.labels(endpoint="batch")
_REJECTED = {
    reason: metrics.HEARTBEATS_REJECTED.labels(reason=reason)
    for reason in ("unauthorized", "forbidden", "invalid", "too_large", "redis_unavailable")
}


@dataclass(frozen=True, slots=True)
class Ingest:
    """What the handlers need, built once at startup (no per-request lookups)."""

    writer: StreamWriter
    secrets: tuple[bytes, ...]  # STATUSD_SECRET first (it signs renewed tokens), then the previous
    max_body: int
    max_items: int
    max_quiet_s: int  # STATUSD_MAX_QUIET_S
    pace: Pace  # the 202's `next_heartbeat_s`, refreshed by the listening beat (statusd.hearing)


INGEST = web.AppKey("ingest", Ingest)


def _json(body: object, status: int, retry: bool = False) -> web.Response:
    headers = {"Retry-After": RETRY_AFTER_S} if retry else None
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _rejected(exc: BadInput) -> web.Response:
    _REJECTED[_REASONS.get(exc.error, "invalid")].inc()
    return _json(exc.as_json(), exc.status)


def _unavailable(exc: NotStored, count: int = 1) -> web.Response:
    _REJECTED["redis_unavailable"].inc(count)
    return _json(
        {"error": "redis_unavailable", "message": f"heartbeat not stored, retry: {exc}"},
        503,
        retry=True,
    )


async def _read_capped(request: web.Request, cap: int) -> bytes:
    if request.content_length is not None and request.content_length > cap:
        raise BadInput(f"body is larger than {cap} bytes", status=413, error="body_too_large")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadInput(
            f"body is larger than {cap} bytes", status=413, error="body_too_large"
        ) from None
    if len(body) > cap:
        raise BadInput(f"body is larger than {cap} bytes", status=413, error="body_too_large")
    return body


async def post_heartbeat(request: web.Request) -> web.Response:
    """One heartbeat: 202 once its entry is in the stream."""
    started = time.perf_counter()
    ingest = request.app[INGEST]
    try:
        body = await _read_capped(request, ingest.max_body)
        claims = claims_from_header(request.headers.get("Authorization"), ingest.secrets)
        heartbeat = check_heartbeat(decode_json(body), claims, max_quiet_s=ingest.max_quiet_s)
        await ingest.writer.append((heartbeat,))
    except BadInput as exc:
        return _rejected(exc)
    except NotStored as exc:
        return _unavailable(exc)
    finally:
        _LATENCY_SINGLE.observe(time.perf_counter() - started)
    metrics.HEARTBEATS_ACCEPTED.inc()
    if heartbeat.renew is not None:
        return _json(
            {
                "status": "accepted",
                "next_heartbeat_s": ingest.pace.interval,
                "heartbeat_token": tokens.reissue(ingest.secrets[0], heartbeat.renew),
            },
            202,
        )
    return web.Response(body=ingest.pace.accepted_body, status=202, content_type="application/json")


def _batch_items(doc: object, max_items: int) -> list[Any]:
    if type(doc) is not dict:
        raise BadInput(
            'a batch must be a JSON object {"items": [...]}',
            field="body",
            status=422,
            error="invalid_body",
        )
    unknown = sorted(k for k in doc if k != "items")
    if unknown:
        raise BadInput(
            f"unknown field {unknown[0]!r}", field=unknown[0], status=422, error="unknown_field"
        )
    items = doc.get("items")
    if type(items) is not list or not items:
        raise BadInput(
            "items must be a non-empty list of heartbeats",
            field="items",
            status=422,
            error="invalid_value",
        )
    if len(items) > max_items:
        raise BadInput(
            f"at most {max_items} items per batch ({len(items)} sent)",
            field="items",
            status=413,
            error="body_too_large",
        )
    return items


async def post_batch(request: web.Request) -> web.Response:
    """Many heartbeats, each with its own token; one result per item, one flush for the lot.

    200 with `results[i] = {"status": 202}` or `{"status": 4xx, "error", "message", "field"?}`;
    503 (+ Retry-After) when Redis did not confirm the appends (items marked 503 were not stored).
    """
    started = time.perf_counter()
    ingest = request.app[INGEST]
    try:
        body = await _read_capped(request, ingest.max_body * ingest.max_items)
        items = _batch_items(decode_json(body), ingest.max_items)
        if len(body) > ingest.max_body * len(items):  # the cap is proportional to the items
            raise BadInput(
                f"body is larger than {ingest.max_body} bytes per item",
                status=413,
                error="body_too_large",
            )
    except BadInput as exc:
        _LATENCY_BATCH.observe(time.perf_counter() - started)
        return _rejected(exc)
    results: list[dict[str, object]] = []
    good: list[CheckedHeartbeat] = []
    slots: list[int] = []
    next_heartbeat_s = ingest.pace.interval
    for item in items:
        try:
            heartbeat = check_batch_item(item, ingest.secrets, max_quiet_s=ingest.max_quiet_s)
            good.append(heartbeat)
            slots.append(len(results))
            result: dict[str, object] = {"status": 202, "next_heartbeat_s": next_heartbeat_s}
            if heartbeat.renew is not None:
                result["heartbeat_token"] = tokens.reissue(ingest.secrets[0], heartbeat.renew)
            results.append(result)
        except BadInput as exc:
            _REJECTED[_REASONS.get(exc.error, "invalid")].inc()
            results.append({"status": exc.status, **exc.as_json()})
    unavailable: NotStored | None = None
    accepted = 0
    if good:
        try:
            await ingest.writer.append(good)  # one flush for the lot: all stored, or none
            accepted = len(good)
            metrics.HEARTBEATS_ACCEPTED.inc(accepted)
        except NotStored as exc:
            unavailable = exc
            _REJECTED["redis_unavailable"].inc(len(good))
            for slot in slots:
                results[slot] = {
                    "status": 503,
                    "error": "redis_unavailable",
                    "message": "not stored, retry",
                }
    _LATENCY_BATCH.observe(time.perf_counter() - started)
    body_out: dict[str, object] = {
        "accepted": accepted,
        "rejected": len(items) - accepted,
        "results": results,
    }
    if unavailable is not None:
        body_out.update(
            error="redis_unavailable",
            message=f"some heartbeats were not stored, retry them: {unavailable}",
        )
    return _json(body_out, 503 if unavailable else 200, retry=unavailable is not None)


def add_routes(app: web.Application) -> None:
    app.router.add_post(HEARTBEATS_PATH, post_heartbeat)
    app.router.add_post(BATCH_PATH, post_batch)
