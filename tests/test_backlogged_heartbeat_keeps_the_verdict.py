"""A heartbeat taken before an UNREACHABLE verdict and applied after it does not clear the verdict.

When the consumers are held back (a database outage), a workload's last heartbeat can still be in
the stream when the sweeper, which judges silence by when ingest took each heartbeat, declares
the workload UNREACHABLE. Applied afterwards as a recovery, that heartbeat cleared the verdict
until the next sweep gave it again: a dead deployment paged twice for one silence. A heartbeat
taken after the verdict still recovers the workload at once.

Real parts: the status API (in-process, no consumers), a real `statusd consume` process applying
the stream, the database; the verdict goes through the one lifecycle function the sweeper uses.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy import select

from statusd.app_keys import RUNTIME
from statusd.db import reading
from statusd.keys import Keys
from statusd.lifecycle import Source, State
from statusd.settings import Settings
from statusd.tables import WORKLOADS
from statusd.transitions import Observation, Outcome, apply_observation
from tests.support.api_client import api_client
from tests.support.ingest_flow import History, drained, register, send, start_consumer, wait_for
from tests.support.processes import stop_process

SHARDS = 2


async def test_a_heartbeat_taken_before_the_verdict_does_not_clear_it(
    make_settings: Callable[..., Settings], redis: Redis, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(consumer_block_ms=100, stream_shards=SHARDS)
    keys = Keys(settings.redis_prefix)
    history = History(database_url)
    try:
        async with api_client(settings, consumers=0) as client:
            rt = client.server.app[RUNTIME]
            token = await register(client, "d1", "deployment")
            ready = Observation("d1", State.READY, Source.PUSH, seq=1, actor="heartbeat")
            assert (await apply_observation(rt.ledger, ready)).outcome is Outcome.APPLIED

            # Taken (202) while no consumer runs: it waits in the stream, as behind an outage.
            assert (await send(client, "/v1/heartbeats", token, "d1", "READY", 2))[0] == 202
            silent = Observation("d1", State.UNREACHABLE, Source.SWEEPER, reason="silent")
            assert (await apply_observation(rt.ledger, silent)).outcome is Outcome.APPLIED

            consumer = start_consumer(settings, "late", tmp_path)
            try:
                await wait_for(lambda: drained(redis, keys, SHARDS), timeout=60, what="seq 2 acked")
                assert (await history.states())["d1"] == "UNREACHABLE"
                async with reading(rt.engine) as conn:
                    last_seq = await conn.scalar(
                        select(WORKLOADS.c.last_seq).where(WORKLOADS.c.id == "d1")
                    )
                assert last_seq == 2  # taken into account, not applied as a change

                # Heard after the verdict: a sign of life, the workload recovers at once.
                assert (await send(client, "/v1/heartbeats", token, "d1", "READY", 3))[0] == 202

                async def recovered() -> bool:
                    return (await history.states())["d1"] == "READY"

                await wait_for(recovered, timeout=60, what="READY at seq 3")
                assert stop_process(consumer, signal.SIGTERM) == 0
            finally:
                consumer.kill_tree()
        assert [
            (str(r["from_state"]), str(r["to_state"]), r["seq"])
            for r in await history.transitions("d1")
        ] == [
            ("PENDING", "READY", 1),
            ("READY", "UNREACHABLE", None),
            ("UNREACHABLE", "READY", 3),
        ]
    finally:
        await history.close()
