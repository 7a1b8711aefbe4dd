"""Read deadlines of our own, and clients that hang up mid-body logged at DEBUG, not as tracebacks.

The server runs with the same options `statusd serve` uses (statusd.api.deadlines.server_options),
on a real loopback socket; the clients are raw sockets doing what a slowloris or a crashed
container does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from statusd.api.deadlines import server_options
from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN
from tests.support.api_client import in_process_app
from tests.support.processes import free_port

DEADLINE_S = 60.0  # generous bound on every wait: never a timing assertion


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(header_timeout=1.0, body_timeout=1.0)


@dataclass
class Served:
    runner: web.AppRunner
    port: int


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Served]:
    """The app behind a plain AppRunner, as web.run_app builds it in `statusd serve`."""
    runner = web.AppRunner(
        in_process_app(settings), handle_signals=False, **server_options(settings)
    )
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield Served(runner, port)
    await runner.cleanup()


@asynccontextmanager
async def connection(
    server: Served,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def closed_by_server(reader: asyncio.StreamReader, trickle: Callable[[], Any]) -> bytes:
    """Keep trickling until the server closes the connection; return what it sent."""
    received = b""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            await trickle()
        except (ConnectionResetError, BrokenPipeError):
            return received
        try:
            chunk = await asyncio.wait_for(reader.read(65536), 0.2)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"server still holds the connection after {DEADLINE_S}s: {received!r}")


async def test_a_client_trickling_its_headers_is_cut(server: Served) -> None:
    async with connection(server) as (reader, writer):
        writer.write(b"POST /v1/heartbeats HTTP/1.1\r\nHost: statusd\r\n")

        async def trickle() -> None:
            writer.write(b"X")  # one byte of a header name that never ends
            await writer.drain()
            await asyncio.sleep(0.1)

        await closed_by_server(reader, trickle)


async def test_a_client_trickling_its_body_is_cut_with_408(server: Served) -> None:
    async with connection(server) as (reader, writer):
        writer.write(
            b"POST /v1/workloads HTTP/1.1\r\nHost: statusd\r\n"
            b"Authorization: Bearer " + TEST_API_TOKEN.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{"
        )

        async def trickle() -> None:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)

        received = await closed_by_server(reader, trickle)
    assert received.startswith(b"HTTP/1.1 408"), received
    assert b'"error":"body_timeout"' in received, received


async def test_an_idle_keepalive_connection_is_closed(server: Served) -> None:
    async with connection(server) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: statusd\r\n\r\n")
        await writer.drain()

        async def nothing() -> None:
            await asyncio.sleep(0.1)

        received = await closed_by_server(reader, nothing)
    assert received.startswith(b"HTTP/1.1 200"), received  # answered, then cut when idle


@pytest.mark.parametrize(
    "path,headers",
    [
        ("/v1/workloads", {"Authorization": f"Bearer {TEST_API_TOKEN}"}),
        ("/v1/heartbeats", {"Authorization": "Bearer hb1.x.training.1.x"}),
        ("/login", {}),
    ],
)
async def test_a_client_hanging_up_mid_body_leaves_no_traceback(
    server: Served,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    path: str,
    headers: dict[str, str],
) -> None:
    caplog.set_level(logging.DEBUG)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    async with connection(server) as (_, writer):
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: statusd\r\n{head}"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n".encode()
            + b"token=half-"
        )
        await writer.drain()
        await asyncio.sleep(0.2)  # let the handler start reading (not a timing assertion)
        writer.transport.abort()  # RST, as a crashed container would
    # The server notices, logs and moves on: wait until it has let go of the connection.
    web_server = server.runner.server
    assert web_server is not None
    deadline = time.monotonic() + DEADLINE_S
    while web_server.connections:
        assert time.monotonic() < deadline, "server never released the connection"
        await asyncio.sleep(0.05)
    async with connection(server) as (reader, writer):  # still serving
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: statusd\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200")
    # aiohttp logs through the standard library; statusd through structlog (captured output).
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [(r.name, r.levelname, r.getMessage()) for r in bad]
    out = capfd.readouterr()
    printed = out.out + out.err
    assert "Traceback" not in printed and "api.unhandled" not in printed, printed
    assert "request.client_gone" in printed, printed  # logged, at DEBUG
