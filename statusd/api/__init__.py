"""Status API for the platform backend (workloads, transitions, health, OpenAPI)."""

from __future__ import annotations

from aiohttp import web


def setup_api(app: web.Application) -> None:
    """Register middlewares and routes of the status API."""
