"""JSON the status page's workload views read (API token or page cookie):

- GET /v1/reports/workloads/{id}: one workload's story (statusd.oncall.workload_story);
- GET /v1/reports/history?window=1h&step=1m[&kind=]: counts by state over time
  (statusd.oncall.fleet_history);
- GET /v1/reports/selfwatch: disruption mode and whether the sweeper stalled (the banners).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aiohttp import web

from statusd import selfwatch
from statusd.access.scopes import Scope
from statusd.api.auth import guard, key_labels
from statusd.api.error_responses import model_response
from statusd.api.request_checks import path_workload_id
from statusd.app_keys import RUNTIME
from statusd.oncall.fleet_history import fleet_history, history_out
from statusd.oncall.stale_report import disruption_json
from statusd.oncall.workload_story import workload_story
from statusd.schema import reports
from statusd.schema.bad_input import parse_query
from statusd.schema.queries import FleetHistoryQuery


@guard(Scope.READ, cookie=True, workload_path=True)
async def get_workload_story(request: web.Request) -> web.Response:
    """GET /v1/reports/workloads/{id}: workload, timeline bands, transitions, refused, polls, sync."""
    return model_response(await workload_story(request.app[RUNTIME], path_workload_id(request)))


@guard(Scope.READ, cookie=True)
async def get_history(request: web.Request) -> web.Response:
    """GET /v1/reports/history: counts by state at each step of the window (newest sample: now)."""
    query = parse_query(FleetHistoryQuery, request.query)  # 400 naming the parameter
    window, step = query.window, query.step
    samples = await fleet_history(
        request.app[RUNTIME].engine,
        now=datetime.now(UTC),
        window_s=window,
        step_s=step,
        kind=query.kind,
        labels=key_labels(request),
    )
    return model_response(history_out(samples, window, step))


@guard(Scope.READ, cookie=True)
async def get_selfwatch(request: web.Request) -> web.Response:
    """GET /v1/reports/selfwatch: is statusd itself healthy enough to trust the page?"""
    rt = request.app[RUNTIME]
    now = time.time()
    disruption = await selfwatch.read_disruption(rt.redis, rt.keys)
    last = await selfwatch.last_sweep_success(rt.redis, rt.keys)
    interval = rt.settings.sweep_interval
    return model_response(
        reports.SelfWatch(
            disruption=reports.Disruption.model_validate(disruption_json(disruption)),
            sweeper=reports.SweeperHealth(
                stalled=selfwatch.sweeper_stalled(last, sweep_interval=interval, now=now),
                last_success_at=_at(last),
                seconds_since_success=round(now - last, 3) if last is not None else None,
                sweep_interval_s=interval,
                stalled_after_s=selfwatch.STALLED_AFTER_INTERVALS * interval,
            ),
            generated_at=_at(now) or "",
        )
    )


def _at(unix: float | None) -> str | None:
    return datetime.fromtimestamp(unix, UTC).isoformat() if unix is not None else None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/reports/workloads/{id}", get_workload_story, allow_head=False)
    app.router.add_get("/v1/reports/history", get_history, allow_head=False)
    app.router.add_get("/v1/reports/selfwatch", get_selfwatch, allow_head=False)
