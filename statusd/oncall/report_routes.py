"""On-call HTTP routes: stale report, summary, recent transitions, live events.

/metrics is wired by statusd.oncall.metrics_endpoint.setup_metrics (its own port, maybe).

The JSON endpoints accept the API token as a Bearer header or, for the status page, the signed
session cookie set by /login (statusd.oncall.login; HttpOnly, SameSite=Strict).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from aiohttp import web

from statusd.access.scopes import Scope
from statusd.api.auth import guard, key_labels
from statusd.api.error_responses import model_response
from statusd.app_keys import RUNTIME
from statusd.availability import breakdown as availability
from statusd.oncall import sse
from statusd.oncall.feed import recent
from statusd.oncall.stale_report import (
    disruption_json,
    stale_filter,
    stale_report,
    to_csv,
)
from statusd.oncall.summary import fleet_summary
from statusd.schema import reports
from statusd.schema.bad_input import parse_query
from statusd.schema.queries import AvailabilityQuery, RecentQuery, StaleQuery
from statusd.selfwatch import read_disruption


@guard(Scope.READ, cookie=True)
async def get_stale(request: web.Request) -> web.Response:
    """GET /v1/reports/stale[?kind=&label=k:v&older_than=5m&format=json|csv]."""
    query = parse_query(StaleQuery, request.query)  # a bad filter: 400 naming the parameter
    flt = stale_filter(query)
    flt = dataclasses.replace(flt, labels=(*flt.labels, *key_labels(request).items()))
    rt = request.app[RUNTIME]
    items = await stale_report(rt.settings, rt.engine, rt.redis, rt.keys, flt)
    if query.format == "csv":
        return web.Response(
            text=to_csv(items),
            content_type="text/csv",
            headers={"Content-Disposition": 'inline; filename="stale.csv"'},
        )
    report = reports.StaleReport(
        items=[reports.StaleItem.model_validate(i.as_dict()) for i in items],
        count=len(items),
        generated_at=datetime.now(UTC).isoformat(),
        disruption=reports.Disruption.model_validate(
            disruption_json(await read_disruption(rt.redis, rt.keys))
        ),
    )
    return model_response(report)


@guard(Scope.READ, cookie=True)
async def get_availability(request: web.Request) -> web.Response:
    """GET /v1/reports/availability[?kind=&label=k:v&id=&from=&to=&group_by=&format=json|csv]."""
    query = parse_query(AvailabilityQuery, request.query)
    rt = request.app[RUNTIME]
    window, selection = availability.query_window(query)
    # A key limited by labels reports on its own workloads only.
    selection = dataclasses.replace(
        selection, labels=(*selection.labels, *key_labels(request).items())
    )
    result = await availability.availability(
        rt.engine, rt.redis, rt.keys, window, selection, group_by=query.group_by
    )
    if query.format == "csv":
        return web.Response(
            text=availability.to_csv(result),
            content_type="text/csv",
            headers={"Content-Disposition": 'inline; filename="availability.csv"'},
        )
    return model_response(
        reports.AvailabilityReport.model_validate(availability.report_json(result))
    )


@guard(Scope.READ, cookie=True)
async def get_summary(request: web.Request) -> web.Response:
    """GET /v1/reports/summary: counts per kind x state, stale counts, sync backlog, stream lag."""
    return model_response(await fleet_summary(request.app[RUNTIME], key_labels(request)))


@guard(Scope.READ, cookie=True)
async def get_recent_transitions(request: web.Request) -> web.Response:
    """GET /v1/reports/transitions?limit=50: newest first; `last_id` is where /v1/events resumes."""
    query = parse_query(RecentQuery, request.query, **sse.last_event_header(request))
    flt = sse.feed_filter(query, key_labels(request))
    hub = request.app[sse.HUB]
    mark = await hub.mark()
    items = await recent(request.app[RUNTIME].engine, mark, query.limit, flt)
    return model_response(reports.RecentTransitions(items=items, count=len(items), last_id=mark))


@guard(Scope.READ, cookie=True)
async def get_events(request: web.Request) -> web.StreamResponse:
    """GET /v1/events: SSE of committed transitions (?kind=, ?workload_id=, Last-Event-ID)."""
    return await sse.stream_events(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/reports/stale", get_stale, allow_head=False)
    app.router.add_get("/v1/reports/summary", get_summary, allow_head=False)
    app.router.add_get("/v1/reports/availability", get_availability, allow_head=False)
    app.router.add_get("/v1/reports/transitions", get_recent_transitions, allow_head=False)
    app.router.add_get("/v1/events", get_events, allow_head=False)
