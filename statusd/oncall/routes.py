"""On-call HTTP routes: stale report, summary, recent transitions, live events.

/metrics is wired by statusd.oncall.metrics_endpoint.setup_metrics (its own port, maybe).

The JSON endpoints accept the API token as a Bearer header or, for the status page, the signed
session cookie set by /login (statusd.oncall.login; HttpOnly, SameSite=Strict).
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from statusd.api.auth import require_api_token_or_cookie
from statusd.api.errors import json_response
from statusd.api.validation import parse_query_int
from statusd.app_keys import RUNTIME
from statusd.errors import BadInput
from statusd.oncall import sse
from statusd.oncall.feed import recent
from statusd.oncall.reports import (
    StaleFilter,
    disruption_json,
    parse_duration,
    parse_kinds,
    parse_label,
    stale_report,
    to_csv,
)
from statusd.oncall.summary import fleet_summary
from statusd.selfwatch import read_disruption

MAX_RECENT = 500


def stale_filter(request: web.Request) -> StaleFilter:
    """kind (repeatable or comma list), label k:v (repeatable, all must match), older_than."""
    return StaleFilter(  # a bad filter raises BadInput (400) naming the parameter
        kinds=parse_kinds(request.query.getall("kind", [])),
        labels=tuple(parse_label(v) for v in request.query.getall("label", [])),
        older_than_s=parse_duration(request.query.get("older_than") or "0"),
    )


@require_api_token_or_cookie
async def get_stale(request: web.Request) -> web.Response:
    """GET /v1/reports/stale[?kind=&label=k:v&older_than=5m&format=json|csv]."""
    fmt = request.query.get("format", "json").lower()
    if fmt not in ("json", "csv"):
        raise BadInput("format: must be json or csv", field="format", status=400)
    flt = stale_filter(request)
    rt = request.app[RUNTIME]
    items = await stale_report(rt.settings, rt.engine, rt.redis, rt.keys, flt)
    if fmt == "csv":
        return web.Response(
            text=to_csv(items),
            content_type="text/csv",
            headers={"Content-Disposition": 'inline; filename="stale.csv"'},
        )
    return json_response(
        {
            "items": [i.as_dict() for i in items],
            "count": len(items),
            "generated_at": datetime.now(UTC).isoformat(),
            "disruption": disruption_json(await read_disruption(rt.redis, rt.keys)),
        }
    )


@require_api_token_or_cookie
async def get_summary(request: web.Request) -> web.Response:
    """GET /v1/reports/summary: counts per kind x state, stale counts, sync backlog, stream lag."""
    return json_response(await fleet_summary(request.app[RUNTIME]))


@require_api_token_or_cookie
async def get_recent_transitions(request: web.Request) -> web.Response:
    """GET /v1/reports/transitions?limit=50: newest first; `last_id` is where /v1/events resumes."""
    raw = request.query.get("limit", "50")
    limit = parse_query_int(raw, "limit", low=1, high=MAX_RECENT)
    flt, _ = sse.parse_stream_request(request)
    hub = request.app[sse.HUB]
    mark = await hub.mark()
    items = await recent(request.app[RUNTIME].engine, mark, limit, flt)
    return json_response({"items": items, "count": len(items), "last_id": mark})


@require_api_token_or_cookie
async def get_events(request: web.Request) -> web.StreamResponse:
    """GET /v1/events: SSE of committed transitions (?kind=, ?workload_id=, Last-Event-ID)."""
    return await sse.stream_events(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/reports/stale", get_stale, allow_head=False)
    app.router.add_get("/v1/reports/summary", get_summary, allow_head=False)
    app.router.add_get("/v1/reports/transitions", get_recent_transitions, allow_head=False)
    app.router.add_get("/v1/events", get_events, allow_head=False)
