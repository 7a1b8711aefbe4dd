"""The API client against a real `statusd serve` whose Redis goes away: a read rides it out,
retried as Retry-After says, and answers once Redis is back; a write is sent once and raises
`Unavailable` with statusd's `retry_after`. Every request the client sends is counted by the
httpx transport it is given (a real one, passing each request on)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from statusd_client import RetryPolicy, StatusdApi, Unavailable, Workload

from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN
from tests.support.client_stack import running_serve, wait_for
from tests.support.redis_proc import RedisProcess


class CountingTransport(httpx.HTTPTransport):
    """httpx's own transport, recording (method, path, status) of every answer."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        with self._lock:
            self.answers.append((request.method, request.url.path, response.status_code))
        return response

    def seen(self, method: str, path: str) -> list[int]:
        with self._lock:
            return [status for m, p, status in self.answers if (m, p) == (method, path)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_reads_wait_out_a_redis_outage_and_writes_are_sent_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    redis = RedisProcess(tmp_path / "redis", appendonly=True)
    settings = make_settings(redis_url=redis.start(), consumers=0)
    transport = CountingTransport()
    try:
        with (
            running_serve(settings, tmp_path) as server,
            StatusdApi(
                server.url,
                TEST_API_TOKEN,
                retry=RetryPolicy(attempts=100, max_wait=5.0),
                transport=transport,
            ) as api,
        ):
            api.register("r-1", "training")
            redis.stop()

            with pytest.raises(Unavailable) as refused:
                api.register("r-2", "training")
            assert refused.value.status == 503 and refused.value.retry_after == 2.0
            assert transport.seen("POST", "/v1/workloads") == [201, 503]  # r-2: sent once

            got: list[Workload] = []
            reader = threading.Thread(target=lambda: got.append(api.get("r-1")), daemon=True)
            reader.start()
            wait_for(
                lambda: transport.seen("GET", "/v1/workloads/r-1"),
                lambda statuses: 503 in statuses,
                within=30,
                what="the read answered 503 while Redis is down",
            )
            redis.start()
            reader.join(60)
            assert got and got[0].id == "r-1" and got[0].state == "PENDING"
            statuses = transport.seen("GET", "/v1/workloads/r-1")
            assert statuses[-1] == 200 and set(statuses[:-1]) == {503}, statuses
    finally:
        redis.stop()
