"""An in-process statusd app on a real loopback socket, with an aiohttp client (no pytest-aiohttp)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from statusd.app import create_app
from statusd.settings import Settings

API_TOKEN_HEADER = "Authorization"


def bearer(token: str) -> dict[str, str]:
    return {API_TOKEN_HEADER: f"Bearer {token}"}


@asynccontextmanager
async def api_client(
    settings: Settings, *, consumers: int = 0
) -> AsyncIterator[TestClient[Any, web.Application]]:
    """`create_app(settings, consumers=0)` served on 127.0.0.1; the client sends the API token by default."""
    app = create_app(settings, consumers=consumers)
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    client: TestClient[Any, web.Application] = TestClient(
        TestServer(app, host="127.0.0.1"), headers=bearer(token)
    )
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
