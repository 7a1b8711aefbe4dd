"""statusd-client's answer handling against a loopback ingest peer injecting faults.

Retry-After is a floor for the next attempt; `next_heartbeat_s` sets the pace; 4xx are logged
once and never retried; refused connections are retried; `set()` returns while a request hangs;
an exception escaping the block reports FAILED. Both the thread and the asyncio variants.

The peer runs on the test's event loop, so blocking client calls (close) go through
`asyncio.to_thread`: the loop must stay free to answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
from statusd_client import AsyncHeartbeater, Heartbeater

from tests.support.ingest_peer import Answer, IngestPeer

UNAVAILABLE = {"error": "redis_unavailable", "message": "heartbeat not stored, retry"}
ACCEPTED_FAST = Answer(202, {"status": "accepted", "next_heartbeat_s": 0.05})
# Longer than the client's first backoff steps (0.5 s, 1 s): a retry would have happened.
QUIET_WINDOW_S = 2.0


@pytest.fixture
async def peer() -> AsyncIterator[IngestPeer]:
    p = IngestPeer()
    await p.start()
    yield p
    p.release()
    await p.stop()


async def wait_until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g}s")
        await asyncio.sleep(0.02)


def heartbeater(peer: IngestPeer, **options: object) -> Heartbeater:
    return Heartbeater(
        peer.base_url, "w-1", "tok-1", interval=3600, handle_sigterm=False, **options
    )  # type: ignore[arg-type]


async def test_retry_after_is_a_floor_and_next_heartbeat_s_sets_the_pace(peer: IngestPeer) -> None:
    peer.script(Answer(503, UNAVAILABLE, retry_after="2"))
    peer.default = ACCEPTED_FAST
    hb = heartbeater(peer).start()
    try:
        hb.set("RUNNING", "epoch 1")
        # The interval is an hour: only next_heartbeat_s can bring requests 3 and 4.
        await wait_until(lambda: len(peer.requests) >= 4, "heartbeats at next_heartbeat_s pace")
    finally:
        await asyncio.to_thread(hb.close)
    first, second = peer.requests[0], peer.requests[1]
    assert second.at - first.at >= 2.0  # never sooner than Retry-After
    seqs = [r.body["seq"] for r in peer.requests]
    assert seqs == sorted(set(seqs)) and seqs[-1] < 2**63
    assert all(r.authorization == "Bearer tok-1" for r in peer.requests)
    assert peer.requests[0].body == {
        "workload_id": "w-1",
        "status": "RUNNING",
        "seq": seqs[0],
        "detail": "epoch 1",
    }


@pytest.mark.parametrize("code", [401, 422])
async def test_a_4xx_is_logged_once_and_never_retried(
    peer: IngestPeer, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="statusd_client")
    peer.script(Answer(code, {"error": "nope", "message": "refused on purpose", "field": "status"}))
    peer.default = ACCEPTED_FAST
    hb = heartbeater(peer).start()
    try:
        hb.set("READY")
        await wait_until(lambda: len(peer.requests) == 1, "the first heartbeat")
        await asyncio.sleep(QUIET_WINDOW_S)
        assert peer.statuses() == ["READY"]
        assert hb.last_refusal is not None and hb.last_refusal.code == code

        hb.set("RUNNING")  # a new state is sent as usual
        await wait_until(lambda: peer.statuses().count("RUNNING") >= 3, "RUNNING heartbeats")
    finally:
        await asyncio.to_thread(hb.close)
    assert peer.statuses().count("READY") == 1
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 1 and "refused READY" in refusals[0].getMessage()


async def test_refused_connections_are_retried_and_set_never_waits_for_the_network() -> None:
    peer = IngestPeer()  # not listening yet: connections are refused
    hb = heartbeater(peer, timeout=30).start()
    try:
        hb.set("STARTING")
        peer.hold()
        await peer.start()
        await wait_until(lambda: peer.inflight == 1, "a retried heartbeat reaching the peer")
        for epoch in range(100):  # the training loop, while a request hangs
            hb.set("RUNNING", f"epoch {epoch}")
        assert peer.inflight == 1  # every set() returned while the request was still held
        peer.release()
        await wait_until(lambda: "RUNNING" in peer.statuses(), "the latest state delivered")
    finally:
        peer.release()
        await asyncio.to_thread(hb.close)
        await peer.stop()
    assert peer.statuses()[0] == "STARTING"
    assert peer.requests[-1].body["detail"] == "epoch 99"


async def test_an_exception_escaping_the_block_reports_failed(peer: IngestPeer) -> None:
    def training() -> None:
        with heartbeater(peer) as hb:
            hb.set("RUNNING")
            raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError):
        await asyncio.to_thread(training)
    assert peer.requests[-1].body["status"] == "FAILED"
    assert peer.requests[-1].body["detail"] == "RuntimeError: CUDA out of memory"


async def test_async_heartbeater_backs_off_parks_refusals_and_reports_on_exit(
    peer: IngestPeer,
) -> None:
    peer.script(
        Answer(503, UNAVAILABLE, retry_after="1"),
        Answer(422, {"error": "invalid", "message": "bad state", "field": "status"}),
    )
    async with AsyncHeartbeater(peer.base_url, "w-1", "tok-1", interval=3600) as hb:
        hb.set("RUNNING")  # 503, then after >= 1 s the retry is refused (422)
        await wait_until(lambda: len(peer.requests) == 2, "the retry after Retry-After")
        await asyncio.sleep(QUIET_WINDOW_S)
        assert len(peer.requests) == 2  # the refused report is not retried
        hb.set("SUCCEEDED")
        await wait_until(lambda: len(peer.requests) == 3, "the final state")
    assert peer.requests[1].at - peer.requests[0].at >= 1.0
    assert peer.statuses() == ["RUNNING", "RUNNING", "SUCCEEDED", "SUCCEEDED"]  # + once on exit
