"""With STATUSD_REDIS_MIN_REPLICA_ACKS=1, a heartbeat is answered 202 only once a replica has it
(WAIT after the group-commit flush): with no replica attached the answer is a 503 naming the
shortfall, counted in statusd_redis_wait_failures_total; with a replica attached, 202."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from statusd.metrics import REDIS_WAIT_FAILURES
from statusd.settings import Settings
from tests.support.api_client import api_client
from tests.support.ingest_flow import register, send
from tests.support.redis_ha import start_replica
from tests.support.redis_proc import RedisProcess

pytestmark = pytest.mark.redis_ha


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "primary")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_no_202_until_a_replica_has_the_heartbeat(
    make_settings: Callable[..., Settings], primary: RedisProcess, tmp_path: Path
) -> None:
    settings = make_settings(redis_url=primary.url, redis_min_replica_acks=1, ingest_timeout=1.5)
    failures = REDIS_WAIT_FAILURES._value.get()
    async with api_client(settings) as client:
        token = await register(client, "train-1", "training")
        status, body = await send(client, "/v1/heartbeats", token, "train-1", "RUNNING", 1)
        assert status == 503, body
        assert body["error"] == "redis_unavailable"
        assert "only 0 of 1 required replicas acknowledged" in body["message"], body
        assert REDIS_WAIT_FAILURES._value.get() == failures + 1

        replica = start_replica(primary.port, tmp_path / "replica")
        try:
            status, body = await send(client, "/v1/heartbeats", token, "train-1", "RUNNING", 1)
            assert status == 202, body
            # The replica has it: the entry is in the replica's copy of the stream.
            with replica.client() as c:
                streams = [k for k in c.keys("*:hb") if b"{s" in k]
                assert sum(c.xlen(k) for k in streams) >= 1
        finally:
            replica.kill()
