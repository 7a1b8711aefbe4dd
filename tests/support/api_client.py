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


def in_process_app(settings: Settings, *, consumers: int = 0) -> web.Application:
    """`create_app` for a server inside the test process, without the start-up heap freeze: in a
    process that builds hundreds of apps, each freeze's full collection walks the whole, ever
    larger process (the statusd processes tests start keep the default)."""
    return create_app(settings.model_copy(update={"gc_freeze": False}), consumers=consumers)


@asynccontextmanager
async def api_client(
    settings: Settings, *, consumers: int = 0
) -> AsyncIterator[TestClient[Any, web.Application]]:
    """`in_process_app(settings)` served on 127.0.0.1; the client sends the API token by default."""
    app = in_process_app(settings, consumers=consumers)
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    client: TestClient[Any, web.Application] = TestClient(
        TestServer(app, host="127.0.0.1"), headers=bearer(token)
    )
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
