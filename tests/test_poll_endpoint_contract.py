"""The poller against a real aiohttp container on loopback: the status contract and every way to break it."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from statusd.lifecycle import Kind, State
from statusd.settings import DEFAULT_POLL_ALLOW_NETS
from statusd.sweeper.poller import parse_status, poll_one, poll_session
from tests.support.processes import free_port

LOOPBACK = [ipaddress.ip_network(n) for n in DEFAULT_POLL_ALLOW_NETS]


class InFlight:
    """How many /hang requests the container holds at once, and the most it ever held."""

    now = 0
    peak = 0


async def _hang(_: web.Request) -> web.Response:
    InFlight.now += 1
    InFlight.peak = max(InFlight.peak, InFlight.now)
    try:
        await asyncio.sleep(3600)
    finally:
        InFlight.now -= 1
    return web.Response()


async def _reset(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.abort()
    await asyncio.sleep(1)
    return web.Response()


ROUTES = {
    "/ok": lambda _: web.json_response({"status": "RUNNING", "seq": 12, "detail": "epoch 3"}),
    "/final": lambda _: web.json_response({"status": "SUCCEEDED", "seq": 13}),
    "/500": lambda _: web.json_response({"status": "RUNNING", "seq": 1}, status=500),
    "/redirect": lambda _: web.HTTPFound("/ok"),
    "/html": lambda _: web.Response(text="<html>hi</html>", content_type="text/html"),
    "/not-a-state": lambda _: web.json_response({"status": "BANANA", "seq": 1}),
    "/wrong-kind": lambda _: web.json_response({"status": "IDLE", "seq": 1}),
    "/no-seq": lambda _: web.json_response({"status": "RUNNING"}),
    "/bool-seq": lambda _: web.json_response({"status": "RUNNING", "seq": True}),
    "/list": lambda _: web.json_response(["RUNNING", 1]),
    "/big": lambda _: web.Response(
        body=b'{"status": "RUNNING", "seq": 1, "pad": "' + b"x" * 100_000 + b'"}'
    ),
}


@pytest.fixture
async def container() -> AsyncIterator[str]:
    app = web.Application()
    for path, handler in ROUTES.items():

        async def h(request: web.Request, handler=handler) -> web.StreamResponse:  # type: ignore[no-untyped-def]
            result = handler(request)
            if isinstance(result, web.HTTPException):
                raise result
            return result

        app.router.add_get(path, h)
    app.router.add_get("/hang", _hang)
    app.router.add_get("/reset", _reset)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def _poll(url: str, *, allow=LOOPBACK, max_bytes: int = 64 * 1024, timeout_s: float = 0.5):  # type: ignore[no-untyped-def]
    async with poll_session(allow, 10) as session:
        return await poll_one(
            session, url, Kind.TRAINING, allow=allow, timeout_s=timeout_s, max_bytes=max_bytes
        )


async def test_a_good_answer_is_a_state_and_a_seq(container: str) -> None:
    answer = await _poll(container + "/ok")
    assert (answer.outcome, answer.status, answer.seq) == ("ok", State.RUNNING, 12)
    assert (await _poll(container + "/final")).status is State.SUCCEEDED


@pytest.mark.parametrize(
    ("path", "outcome"),
    [
        ("/500", "http_status"),
        ("/redirect", "redirect"),
        ("/html", "garbage"),
        ("/not-a-state", "garbage"),
        ("/wrong-kind", "garbage"),
        ("/no-seq", "garbage"),
        ("/bool-seq", "garbage"),
        ("/list", "garbage"),
        ("/big", "too_large"),
        ("/hang", "timeout"),
        ("/reset", "reset"),
    ],
)
async def test_every_broken_answer_is_a_failed_poll_with_its_reason(
    container: str, path: str, outcome: str
) -> None:
    # Only the hang waits out its timeout; the others get one no busy machine reaches, so a slow
    # send of the big body is still judged by its size.
    answer = await _poll(container + path, timeout_s=0.5 if outcome == "timeout" else 10.0)
    assert answer.outcome == outcome, answer
    assert answer.error and answer.status is None


async def test_refused_connection_is_a_failed_poll() -> None:
    answer = await _poll(f"http://127.0.0.1:{free_port()}/status")
    assert answer.outcome == "refused", answer


async def test_a_hang_costs_one_timeout_not_the_sum_of_them(container: str) -> None:
    """Ten hanging endpoints polled together take about one timeout, and a good one still answers."""
    InFlight.peak = InFlight.now
    # A generous bound so a regression fails instead of hanging; not a benchmark.
    async with asyncio.timeout(30), poll_session(LOOPBACK, 100) as session:
        answers = await asyncio.gather(
            *[
                poll_one(
                    session,
                    container + "/hang",
                    Kind.TRAINING,
                    allow=LOOPBACK,
                    timeout_s=0.5,
                    max_bytes=1024,
                )
                for _ in range(10)
            ],
            poll_one(
                session,
                container + "/ok",
                Kind.TRAINING,
                allow=LOOPBACK,
                timeout_s=0.5,
                max_bytes=1024,
            ),
        )
    assert [a.outcome for a in answers] == ["timeout"] * 10 + ["ok"]
    # Deterministic proof of concurrency: all ten were in flight at the container at once
    # (polled one after another, each would have timed out before the next one arrived).
    assert InFlight.peak >= 10, InFlight.peak


async def test_the_allow_list_is_checked_again_at_poll_time(container: str) -> None:
    """Registered while loopback was allowed; the poller's allow-list no longer has it: never fetched."""
    only_private = [ipaddress.ip_network("10.0.0.0/8")]
    answer = await _poll(container + "/ok", allow=only_private)
    assert answer.outcome == "blocked"
    by_name = await _poll(container.replace("127.0.0.1", "localhost") + "/ok", allow=only_private)
    assert by_name.outcome == "blocked", by_name


def test_parse_status_is_strict() -> None:
    assert parse_status(b'{"status": "RUNNING", "seq": 0}', Kind.TRAINING) == (State.RUNNING, 0)
    for body in (
        b"",
        b"null",
        b'{"status": "UNREACHABLE", "seq": 1}',
        b'{"status": "RUNNING", "seq": -1}',
    ):
        with pytest.raises(ValueError):
            parse_status(body, Kind.TRAINING)
