"""The ingest side mounted on a `serve` app: the heartbeat routes and, when asked, the consumers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from statusd.app_keys import RUNTIME
from statusd.hearing import ListeningBeat, Pace
from statusd.ingest.consumer import ConsumerSet
from statusd.ingest.heartbeat_routes import INGEST, Ingest, add_routes
from statusd.ingest.replica_acks import ReplicaAcks
from statusd.ingest.writer import StreamWriter

CONSUMERS = web.AppKey("consumers", ConsumerSet)
log = structlog.get_logger("statusd.consumer")


def setup_ingest(app: web.Application, *, consumers: int) -> None:
    """Register the heartbeat routes and, when consumers > 0, the consumer tasks.

    Both are cleanup contexts appended after the runtime's (app.py), so on shutdown they stop
    (consumers finish or are cancelled and awaited, in-flight appends finish) before the
    runtime closes the pools they use.
    """
    add_routes(app)

    async def writer_ctx(app: web.Application) -> AsyncIterator[None]:
        runtime = app[RUNTIME]
        settings = runtime.settings
        replica_acks = ReplicaAcks(runtime.redis, settings.redis_min_replica_acks)
        try:
            await replica_acks.refresh()
        except Exception as exc:  # Redis down at startup: the refresh loop tries again
            log.warning("ingest.replica_check_failed", error=str(exc))
        replica_acks.start()
        writer = StreamWriter(
            runtime.redis,
            runtime.keys,
            shards=settings.stream_shards,
            timeout=settings.ingest_timeout,
            max_inflight=settings.ingest_pipelines,
            replica_acks=replica_acks,
        )
        pace = Pace(settings)
        app[INGEST] = Ingest(
            writer=writer,
            secrets=settings.verifying_secrets,
            max_body=settings.max_body_bytes,
            max_items=settings.max_batch_items,
            max_quiet_s=settings.max_quiet_s,
            pace=pace,
        )
        # "This process is accepting": the sweeper judges silence only while some ingest was.
        beat = ListeningBeat(runtime.redis, runtime.keys, pace)
        beat.start()
        yield
        await beat.stop()
        await writer.close()
        await replica_acks.stop()

    app.cleanup_ctx.append(writer_ctx)
    if consumers > 0:

        async def consumers_ctx(app: web.Application) -> AsyncIterator[None]:
            consumer_set = ConsumerSet(app[RUNTIME], count=consumers)
            await consumer_set.ensure_groups()
            consumer_set.start()
            app[CONSUMERS] = consumer_set
            yield
            await consumer_set.stop()

        app.cleanup_ctx.append(consumers_ctx)
