"""On-call: stale reports, live events (SSE), metrics, the status page."""

from __future__ import annotations

from aiohttp import web


def setup_oncall(app: web.Application) -> None:
    """Register the on-call routes."""
