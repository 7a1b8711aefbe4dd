"""GET /v1/events: Server-Sent Events of committed transitions.

One `EventHub` per app process: a single Redis pub/sub subscription (the post-commit hint from
statusd.oncall.events.publish_listener) plus a 1 s poll fallback move the shared HighWater mark;
each stream then reads its rows from the database (the truth) with its own cursor and filters.
A lost pub/sub message therefore costs at most a second, never an event.

Each event: `id: <transition id>`, `event: transition`, `data: {...}`. A client that reconnects
with `Last-Event-ID` (EventSource does it by itself) or `?last_event_id=` resumes right after it.
Comment lines `: ping` keep idle connections (and proxies) alive. Open streams are tracked in
`hub.streams`; app shutdown (close_hub) wakes every one of them through the hub so each ends
promptly instead of waiting out the server's shutdown timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from statusd.api.auth import key_labels
from statusd.app_keys import RUNTIME
from statusd.errors import StorageUnavailable
from statusd.oncall.feed import PAGE, FeedFilter, HighWater, read_after
from statusd.runtime import Runtime
from statusd.schema.bad_input import parse_query
from statusd.schema.queries import StreamQuery

log = structlog.get_logger("statusd.oncall")
POLL_FALLBACK_S = 1.0
# Writing to a client that left (aiohttp's ClientConnectionResetError is a ConnectionResetError).
CLIENT_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class EventHub:
    """Wakes the SSE streams of one process when new transitions may be readable."""

    def __init__(self, runtime: Runtime, *, ping_interval: float, max_holdback: float) -> None:
        self.runtime = runtime
        self.ping_interval = ping_interval
        self.high_water = HighWater(runtime.engine, max_holdback_s=max_holdback)
        self.changed = asyncio.Condition()
        self.closing = False
        self.streams: weakref.WeakSet[web.StreamResponse] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def mark(self) -> int:
        """The current safe upper bound (starts the hub on first use).

        Raises StorageUnavailable (HTTP 503) while the mark is not known yet (the database was
        unreachable since the hub started): answering 0 would replay the whole history.
        """
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="statusd-events-hub")
        await self._ready.wait()
        if self.high_water.mark is None:
            raise StorageUnavailable("events: the database is not reachable; retry shortly")
        return self.high_water.mark

    async def _run(self) -> None:
        """Keep the mark moving; retry Redis and the database independently while either is down."""
        pubsub = self.runtime.redis.pubsub(ignore_subscribe_messages=True)
        subscribed = False
        try:
            while not self.closing:
                if not subscribed:
                    try:
                        await pubsub.subscribe(self.runtime.keys.events_channel)
                        subscribed = True
                    except Exception as exc:  # Redis down: the 1 s poll still moves the mark
                        log.warning("events.hub_error", error=f"{type(exc).__name__}: {exc}")
                try:
                    await self._advance()
                except Exception as exc:  # DB down: retry next round, streams keep pinging
                    log.warning("events.hub_error", error=f"{type(exc).__name__}: {exc}")
                finally:
                    self._ready.set()  # mark() answers now (503 while the mark is unknown)
                if not subscribed:
                    await asyncio.sleep(POLL_FALLBACK_S)
                    continue
                try:
                    await _wait_for_hint(pubsub, POLL_FALLBACK_S)
                except Exception as exc:
                    log.warning("events.hub_error", error=f"{type(exc).__name__}: {exc}")
                    subscribed = False
                    await asyncio.sleep(POLL_FALLBACK_S)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def _advance(self) -> None:
        before = self.high_water.mark
        await self.high_water.advance()
        if self.high_water.mark != before:
            async with self.changed:
                self.changed.notify_all()

    async def wait_past(self, mark: int, seconds: float) -> bool:
        """Sleep until the mark moves past `mark` or the hub closes (True), or `seconds` pass (False)."""
        async with self.changed:
            # Checked under the lock _advance notifies under: a move cannot slip in between.
            if (self.high_water.mark or 0) != mark or self.closing:
                return True
            try:
                await asyncio.wait_for(self.changed.wait(), seconds)
            except TimeoutError:
                return False
            return True

    async def close(self) -> None:
        """End every stream and the hub task (app shutdown)."""
        self.closing = True
        log.info("events.closing", open_streams=len(self.streams))
        async with self.changed:
            self.changed.notify_all()
        if self._task is not None:
            self._task.cancel()
            # asyncio.wait never raises the task's outcome, so a cancellation of close() itself
            # still propagates; the hub's own cancellation (or error) is consumed here.
            await asyncio.wait([self._task])
            if not self._task.cancelled() and (exc := self._task.exception()) is not None:
                log.warning("events.hub_error", error=f"{type(exc).__name__}: {exc}")


async def _wait_for_hint(pubsub: Any, seconds: float) -> None:
    """Return on the first pub/sub message (draining any burst) or after `seconds`."""
    message = await pubsub.get_message(timeout=seconds)
    while message is not None:  # a burst of commits needs one advance, not one each
        message = await pubsub.get_message(timeout=0)


HUB = web.AppKey("statusd_event_hub", EventHub)


def last_event_header(request: web.Request) -> dict[str, str]:
    """The Last-Event-ID header as a query override (EventSource sends it on reconnect)."""
    header = request.headers.get("Last-Event-ID")
    return {"last_event_id": header} if header else {}


def feed_filter(query: StreamQuery, labels: Mapping[str, str] | None = None) -> FeedFilter:
    """The query's filters, narrowed to the workloads carrying `labels` (the caller's key's)."""
    return FeedFilter(
        kind=query.kind,
        workload_id=query.workload_id or None,
        labels=tuple(sorted((labels or {}).items())),
    )


def parse_stream_request(request: web.Request) -> tuple[FeedFilter, int | None]:
    """Filters and resume point of a stream request. Raises BadInput naming the field."""
    query = parse_query(StreamQuery, request.query, **last_event_header(request))
    return feed_filter(query, key_labels(request)), query.last_event_id


async def stream_events(request: web.Request) -> web.StreamResponse:
    """The SSE loop for one client (auth is checked by the route wrapper)."""
    hub = request.app[HUB]
    runtime = request.app[RUNTIME]
    flt, last = parse_stream_request(request)
    mark = await hub.mark()
    cursor = mark if last is None else last
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    hub.streams.add(response)
    try:
        await response.write(b"retry: 2000\n\n")
        async for chunk in _events(hub, runtime, flt, cursor, request):
            await response.write(chunk)
    except CLIENT_GONE:
        pass  # the client went away: nothing to report (cancellation propagates)
    except Exception as exc:
        log.warning("events.stream_error", error=f"{type(exc).__name__}: {exc}")
    finally:
        hub.streams.discard(response)
    return response


async def _events(
    hub: EventHub, runtime: Runtime, flt: FeedFilter, cursor: int, request: web.Request
) -> AsyncIterator[bytes]:
    while not hub.closing:
        upto = hub.high_water.mark or 0
        if upto > cursor:
            rows = await read_after(runtime.engine, cursor, upto, flt, limit=PAGE)
            for row in rows:
                yield format_event(row)
                cursor = row["id"]
            if len(rows) == PAGE:
                continue  # more below the mark: keep reading before waiting
            cursor = upto  # nothing else of ours up to the mark: never re-read those ids
        news = await hub.wait_past(upto, hub.ping_interval)
        if request.transport is None or request.transport.is_closing():
            return  # the client left while we waited (aiohttp does not cancel the handler)
        if not news:
            yield b": ping\n\n"


def format_event(payload: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: transition\ndata: %s\n\n" % (payload["id"], orjson.dumps(payload))


async def close_hub(app: web.Application) -> None:
    """on_shutdown: end all streams now so the server does not wait for them."""
    if HUB in app:
        await app[HUB].close()
