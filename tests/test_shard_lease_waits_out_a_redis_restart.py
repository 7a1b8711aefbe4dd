"""A shard lease lost with a Redis restart is not granted to a second consumer before the first
one's deadline has passed.

A server restarted empty (or from an AOF missing its last second) can have lost a lease whose
holder still trusts it until its local deadline. A consumer that lived through the restart finds
the shard free; taking it then would make two holders of one shard, and a workload's older report
committed after a newer one would be dropped as stale (an accepted change lost). So free leases
are refused (ServerTooYoung) until the server is a lease ttl old, to consumers older than the
server; a consumer started after the server (a fresh deployment) is not held back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from statusd.ingest.leases import LeaseBook, ServerTooYoung
from tests.support.redis_proc import RedisProcess

TTL_MS = 3000  # the holder trusts its lease for 2 s after acquiring it
KEY = "lease-test:{s0}:lease"


async def test_a_lease_lost_in_a_restart_waits_one_ttl_for_a_new_holder(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis", appendonly=False)
    url = server.start()
    client = Redis.from_url(url, socket_timeout=5)
    try:
        holder, other = LeaseBook(client), LeaseBook(client)
        await asyncio.sleep(2.5)  # both books older than the next server (its uptime: +-1 s)
        lease = await holder.acquire(KEY, "holder", TTL_MS)
        assert lease is not None and lease.valid()  # consumers started after the server

        server.restart()  # empty: the lease key is gone, its holder still trusts it
        await client.connection_pool.disconnect()
        restarted = time.monotonic()
        assert await client.get(KEY) is None
        with pytest.raises(ServerTooYoung):
            await other.acquire(KEY, "other", TTL_MS)
        assert lease.valid(), "the test must probe inside the old holder's deadline"

        # Granted again once the server is a ttl old: past the old holder's deadline.
        while True:
            try:
                taken = await other.acquire(KEY, "other", TTL_MS)
                break
            except ServerTooYoung:
                assert time.monotonic() - restarted < 10 * TTL_MS / 1000, "never granted"
                await asyncio.sleep(0.1)
        assert taken is not None
        assert not lease.valid()
        assert await client.get(KEY) == b"other"

        # A consumer started after the server (a fresh deployment) is not held back.
        server.restart()
        await client.connection_pool.disconnect()
        fresh = LeaseBook(client)
        assert await fresh.acquire(KEY, "fresh", TTL_MS) is not None
    finally:
        await client.aclose()
        server.stop()
