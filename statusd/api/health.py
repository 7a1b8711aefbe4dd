"""Liveness and readiness probes (no auth: load balancers and orchestrators call them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import structlog
from aiohttp import web
from sqlalchemy import text

from statusd import selfwatch
from statusd.api.error_responses import error_response, json_response
from statusd.app_keys import RUNTIME
from statusd.db import reading
from statusd.runtime import Runtime

log = structlog.get_logger("statusd.api")

# Short on purpose: a probe that hangs as long as the dependency does tells the orchestrator nothing.
REDIS_TIMEOUT_S = 1.0
DB_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process is up and serving (no dependency checks)."""
    return json_response({"status": "ok"})


async def _check(probe: Awaitable[object], within: float) -> str | None:
    """None when the probe succeeds in time, else a short reason."""
    try:
        await asyncio.wait_for(probe, within)
    except TimeoutError:
        return f"no answer within {within}s"
    except Exception as exc:  # any failure means "not ready"; the reason is reported, not raised
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 when Redis answers PING and the database SELECT 1; 503 naming what is down."""
    rt = request.app[RUNTIME]

    async def db_probe() -> None:
        async with reading(rt.engine) as conn:
            await conn.execute(text("SELECT 1"))

    redis_error, db_error = await asyncio.gather(
        _check(rt.redis.ping(), REDIS_TIMEOUT_S),
        _check(db_probe(), DB_TIMEOUT_S),
    )
    checks = {
        "redis": "ok" if redis_error is None else f"down: {redis_error}",
        "database": "ok" if db_error is None else f"down: {db_error}",
    }
    down = [
        name for name, err in (("redis", redis_error), ("database", db_error)) if err is not None
    ]
    warnings: list[str] = []
    if redis_error is None:
        # Reported, never a 503: pulling ingest out of the load balancer because the sweeper is
        # down would turn one fault into two.
        checks["sweeper"] = await _sweeper_check(rt)
        if checks["sweeper"] != "ok":
            warnings.append(f"sweeper {checks['sweeper']}")
    if not down:
        return json_response({"status": "ready", "checks": checks, "warnings": warnings})
    log.warning("readyz.not_ready", down=down)
    return error_response(
        503, "not_ready", f"not ready: {' and '.join(down)} down", down=down, checks=checks
    )


async def _sweeper_check(rt: Runtime) -> str:
    """ "ok", or "stalled: ..." when no sweep finished for selfwatch.STALLED_AFTER_INTERVALS."""
    try:
        last = await asyncio.wait_for(
            selfwatch.last_sweep_success(rt.redis, rt.keys), REDIS_TIMEOUT_S
        )
    except Exception as exc:  # Redis trouble is the redis check's to report
        return f"unknown: {type(exc).__name__}"
    interval = rt.settings.sweep_interval
    now = time.time()
    if not selfwatch.sweeper_stalled(last, sweep_interval=interval, now=now):
        return "ok"
    if last is None:
        return "stalled: no sweep has finished yet"
    return (
        f"stalled: last sweep finished {now - last:.0f}s ago "
        f"(more than {selfwatch.STALLED_AFTER_INTERVALS} x {interval:g}s)"
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
