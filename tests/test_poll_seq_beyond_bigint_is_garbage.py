"""A status endpoint answering a seq beyond BIGINT is a failed poll ("garbage"), never an
OverflowError on its way into SQL (the same class of bug as an ?after=2^63 cursor)."""

from __future__ import annotations

import ipaddress

import pytest
from aiohttp import web

from statusd.lifecycle import Kind, State
from statusd.settings import DEFAULT_POLL_ALLOW_NETS
from statusd.sweeper.poller import poll_one, poll_session
from tests.support.loopback import LoopbackServer

ALLOW = [ipaddress.ip_network(n) for n in DEFAULT_POLL_ALLOW_NETS]


class StatusEndpoint(LoopbackServer):
    def __init__(self, seq: int) -> None:
        super().__init__()
        self.seq = seq

    def routes(self, app: web.Application) -> None:
        async def status(_: web.Request) -> web.Response:
            return web.json_response({"status": "RUNNING", "seq": self.seq})

        app.router.add_get("/status", status)


@pytest.mark.parametrize("seq,outcome", [(2**63 - 1, "ok"), (2**63, "garbage"), (2**80, "garbage")])
async def test_seq_must_fit_a_bigint(seq: int, outcome: str) -> None:
    endpoint = StatusEndpoint(seq)
    await endpoint.start()
    try:
        async with poll_session(ALLOW, 2) as session:
            answer = await poll_one(
                session,
                f"{endpoint.base_url}/status",
                Kind.TRAINING,
                allow=ALLOW,
                timeout_s=10.0,
                max_bytes=1024,
            )
    finally:
        await endpoint.stop()
    assert answer.outcome == outcome, answer
    if outcome == "ok":
        assert answer.status is State.RUNNING and answer.seq == seq
