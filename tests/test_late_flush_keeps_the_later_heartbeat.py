"""A heartbeat flush cut off by a network partition and delivered after it never moves the
workload's sign of life back.

A `serve` in a network namespace of the test's own (bench/chaos_netns.py) appends a heartbeat
while its link to a real Redis is down: packets dropped, the flush times out and is answered 503.
The client's retry reaches another `serve` and is stored. Then the link comes back and TCP
delivers the cut-off flush, older than the retry. Before, its last-seen score overwrote the
retry's, so a heartbeating workload looked silent since the cut and the sweeper declared it
UNREACHABLE (found by the chaos run's partitions). Creating namespaces needs root; elsewhere the
test skips.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from tests.support.chaos_network import open_network
from tests.support.redis_proc import RedisProcess

PREFIX = "late-flush:"
WORKLOAD = "w-partitioned"
SHARDS = 2
LANDED_WITHIN_S = 120.0  # TCP's retransmission after the heal; the wait ends as soon as it lands


# The partitioned `serve`: one append with the link up (the connection is made), then, on each
# line read, one more append with seq = the line; prints "result: " and "stored" or the error's
# name (its log lines go to the same output).
SERVE = f"""
import asyncio, sys
from statusd.ingest.heartbeat_checks import CheckedHeartbeat
from statusd.ingest.writer import StreamWriter
from statusd.keys import Keys
from statusd.redis_runtime import create_redis

async def main():
    redis = create_redis(sys.argv[1], 4)
    writer = StreamWriter(redis, Keys({PREFIX!r}, {SHARDS}), shards={SHARDS}, timeout=1.0)
    loop = asyncio.get_running_loop()
    seq = 1
    while True:
        beat = CheckedHeartbeat(workload_id={WORKLOAD!r}, status="RUNNING", seq=seq, detail=None,
                                generation=1)
        try:
            await writer.append([beat])
            print("result: stored", flush=True)
        except Exception as exc:
            print("result:", type(exc).__name__, flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        seq = int(line)

asyncio.run(main())
"""


def _result(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("result: "):
            return line.removeprefix("result: ").strip()
    raise AssertionError(f"the partitioned serve exited with {proc.wait()}")


@pytest.fixture
def network() -> Iterator[Any]:
    with open_network(["serve"]) as net:
        yield net


def test_a_flush_delivered_after_the_partition_keeps_the_retry_as_last_seen(
    tmp_path: Path, network: Any
) -> None:
    from statusd.ingest.heartbeat_checks import CheckedHeartbeat
    from statusd.ingest.writer import StreamWriter
    from statusd.keys import Keys
    from statusd.redis_runtime import create_redis

    server = RedisProcess(tmp_path / "redis")
    server.bind = ("127.0.0.1", network.host)
    server.start()
    ns = network.namespaces["serve"]
    keys = Keys(PREFIX, SHARDS)
    direct = redis_sync.Redis(port=server.port)
    url = f"redis://{network.host}:{server.port}/0"
    cut_off = subprocess.Popen(
        ns.command([sys.executable, "-c", SERVE, url]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert cut_off.stdin is not None and cut_off.stdout is not None
        assert _result(cut_off) == "stored"
        ns.cut()
        cut_off.stdin.write("2\n")
        cut_off.stdin.flush()
        assert _result(cut_off) == "NotStored"  # answered 503

        async def retry() -> None:  # the client's retry, through a `serve` that reaches Redis
            redis = create_redis(f"redis://127.0.0.1:{server.port}/0", 4)
            writer = StreamWriter(redis, keys, shards=SHARDS, timeout=5.0)
            await writer.append([CheckedHeartbeat(WORKLOAD, "RUNNING", 2, None, 1)])
            await writer.close()
            await redis.aclose()

        asyncio.run(retry())
        retried = direct.zscore(keys.last_seen(keys.shard(WORKLOAD)), WORKLOAD)
        assert retried is not None
        ns.heal()
        stream = keys.heartbeat_shard(keys.shard(WORKLOAD))
        deadline = time.monotonic() + LANDED_WITHIN_S
        while direct.xlen(stream) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert direct.xlen(stream) == 3, "the cut-off flush never reached Redis"
        assert direct.zscore(keys.last_seen(keys.shard(WORKLOAD)), WORKLOAD) == retried
    finally:
        cut_off.kill()
        cut_off.communicate()  # reaps it and closes its pipes
        direct.close()
        server.stop()
