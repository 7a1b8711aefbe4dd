"""Heartbeat push path: ingest endpoint (hot path) and stream consumers."""

from __future__ import annotations

from aiohttp import web


def setup_ingest(app: web.Application, *, consumers: int) -> None:
    """Register the heartbeat routes and, when consumers > 0, the consumer tasks."""
