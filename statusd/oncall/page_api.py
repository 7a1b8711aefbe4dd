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
from statusd.api.auth import require_api_token_or_cookie
from statusd.api.errors import json_response
from statusd.api.validation import WORKLOAD_ID_RE, reject_unknown_params
from statusd.app_keys import RUNTIME
from statusd.errors import BadInput, UnknownWorkload
from statusd.lifecycle import Kind
from statusd.oncall.fleet_history import (
    MAX_SAMPLES,
    MAX_WINDOW_S,
    fleet_history,
    history_json,
)
from statusd.oncall.reports import parse_duration
from statusd.oncall.workload_story import workload_story

HISTORY_PARAMS = frozenset({"window", "step", "kind"})
DEFAULT_WINDOW, DEFAULT_STEP = "1h", "1m"


def workload_id_of(request: web.Request) -> str:
    """The path's {id}; ids that could never be registered are simply unknown (404)."""
    workload_id = request.match_info["id"]
    if not WORKLOAD_ID_RE.fullmatch(workload_id):
        raise UnknownWorkload(f"workload {workload_id!r} is not registered")
    return workload_id


@require_api_token_or_cookie
async def get_workload_story(request: web.Request) -> web.Response:
    """GET /v1/reports/workloads/{id}: workload, timeline bands, transitions, refused, polls, sync."""
    return json_response(await workload_story(request.app[RUNTIME], workload_id_of(request)))


def _duration(request: web.Request, name: str, default: str) -> float:
    value = parse_duration(request.query.get(name) or default, name)  # BadInput (400) if bad
    if value <= 0:
        raise BadInput(f"{name}: must be more than 0", field=name, status=400)
    return value


@require_api_token_or_cookie
async def get_history(request: web.Request) -> web.Response:
    """GET /v1/reports/history: counts by state at each step of the window (newest sample: now)."""
    reject_unknown_params(request.query, HISTORY_PARAMS)
    window = _duration(request, "window", DEFAULT_WINDOW)
    step = _duration(request, "step", DEFAULT_STEP)
    if window > MAX_WINDOW_S:
        raise BadInput(f"window: at most {MAX_WINDOW_S // 86400} days", field="window", status=400)
    if window / step > MAX_SAMPLES:
        raise BadInput(
            f"step: window/step must be at most {MAX_SAMPLES} samples", field="step", status=400
        )
    kind: Kind | None = None
    if raw_kind := request.query.get("kind"):
        try:
            kind = Kind(raw_kind)
        except ValueError:
            raise BadInput(
                f"kind: {raw_kind!r} is not one of {', '.join(Kind)}", field="kind", status=400
            ) from None
    samples = await fleet_history(
        request.app[RUNTIME].engine,
        now=datetime.now(UTC),
        window_s=window,
        step_s=step,
        kind=kind,
    )
    return json_response(history_json(samples, window, step))


@require_api_token_or_cookie
async def get_selfwatch(request: web.Request) -> web.Response:
    """GET /v1/reports/selfwatch: is statusd itself healthy enough to trust the page?"""
    rt = request.app[RUNTIME]
    now = time.time()
    disruption = await selfwatch.read_disruption(rt.redis, rt.keys)
    last = await selfwatch.last_sweep_success(rt.redis, rt.keys)
    interval = rt.settings.sweep_interval
    return json_response(
        {
            "disruption": {
                "active": disruption.active,
                "since": _at(disruption.since),
                "stale": disruption.stale,
                "tracked": disruption.tracked,
                "fraction": round(disruption.fraction, 4),
            },
            "sweeper": {
                "stalled": selfwatch.sweeper_stalled(last, sweep_interval=interval, now=now),
                "last_success_at": _at(last),
                "seconds_since_success": round(now - last, 3) if last is not None else None,
                "sweep_interval_s": interval,
                "stalled_after_s": selfwatch.STALLED_AFTER_INTERVALS * interval,
            },
            "generated_at": _at(now),
        }
    )


def _at(unix: float | None) -> str | None:
    return datetime.fromtimestamp(unix, UTC).isoformat() if unix is not None else None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/reports/workloads/{id}", get_workload_story, allow_head=False)
    app.router.add_get("/v1/reports/history", get_history, allow_head=False)
    app.router.add_get("/v1/reports/selfwatch", get_selfwatch, allow_head=False)
