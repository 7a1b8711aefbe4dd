"""A real aiohttp server on 127.0.0.1 playing the platform's main API, with fault injection.

It implements the contract statusd syncs to (`PUT /workloads/{id}/status`, Bearer token,
Idempotency-Key = transition id) the way a careful main API would: a key it already holds is an
idempotent replay (200), a transition older than the newest it holds is answered 409. On top it
CHECKS statusd, recording every breach in `violations` (tests assert it is empty):
- a transition older than one already accepted for the workload (per-workload order broken),
- a request for a key while another request with that key is being processed (sent concurrently),
- an Idempotency-Key that is not the body's transition_id, a body missing contract fields.

Faults (set `faults` any time): connection refused (`stop()`; `start()` again on the same port),
a ratio of 5xx / 429 answers, timeouts (sleep beyond the client's timeout, nothing recorded),
connection resets before processing (transport aborted, nothing recorded), lost acks (processed
and recorded, then the connection is reset: the client must re-send the same key), and permanent
4xx for chosen workloads.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.support.loopback import LoopbackServer

CONTRACT_FIELDS = ("state", "previous", "changed_at", "transition_id", "source", "reason")


@dataclass
class Faults:
    error_ratio: float = 0.0  # answer 503
    too_many_ratio: float = 0.0  # answer 429
    timeout_ratio: float = 0.0  # sleep `timeout_sleep` (beyond the client timeout), then 504
    timeout_sleep: float = 3.0
    reset_ratio: float = 0.0  # abort the connection before processing
    ack_lost_ratio: float = 0.0  # process + record, then abort: the client never sees the 200
    reject: dict[str, int] = field(default_factory=dict)  # workload id -> permanent 4xx status
    process_delay: float = 0.0  # seconds inside the "processing" section (widens race windows)


@dataclass(frozen=True)
class Received:
    workload_id: str
    transition_id: int
    key: str
    body: dict[str, Any]
    at: float


class FakeMainAPI(LoopbackServer):
    """Start with `await api.start()`; `api.url` is STATUSD_MAIN_API_URL."""

    def __init__(self, token: str, *, port: int | None = None, seed: int = 1) -> None:
        super().__init__(port)
        self.token = token
        self.faults = Faults()
        self.random = random.Random(seed)
        self.received: list[
            Received
        ] = []  # processed (accepted or idempotent replay), arrival order
        self.accepted: dict[str, list[int]] = {}  # workload -> unique transition ids, in order
        self.key_count: Counter[str] = Counter()  # processed requests per Idempotency-Key
        self.requests = 0  # every request that reached the handler
        self.faulted: Counter[str] = Counter()  # fault kind -> count
        self.rejected: list[tuple[str, int]] = []  # (workload, transition) answered a permanent 4xx
        self.violations: list[str] = []
        self.in_flight: set[str] = set()
        self.max_in_flight = 0

    @property
    def url(self) -> str:
        return self.base_url

    def routes(self, app: web.Application) -> None:
        app.router.add_put("/workloads/{workload_id}/status", self._put_status)

    # -- what tests look at --------------------------------------------------------------------
    def total_accepted(self) -> int:
        return sum(len(ids) for ids in self.accepted.values())

    def duplicates(self) -> dict[str, int]:
        """Keys processed more than once (idempotent re-sends)."""
        return {key: n for key, n in self.key_count.items() if n > 1}

    async def wait_until(self, predicate: Any, within: float, what: str) -> None:
        """Bounded wait for `predicate()` (a condition on what was received)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"main API: {what} not reached within {within}s (accepted {self.total_accepted()}, "
            f"requests {self.requests}, faults {dict(self.faulted)}, violations {self.violations[:5]})"
        )

    # -- the handler ---------------------------------------------------------------------------
    async def _put_status(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        workload_id = request.match_info["workload_id"]
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json(401, {"error": "unauthorized"})
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            self.violations.append(f"{workload_id}: body is not JSON")
            return _json(400, {"error": "invalid JSON"})
        missing = [name for name in CONTRACT_FIELDS if name not in body]
        key = request.headers.get("Idempotency-Key", "")
        if missing or key != str(body.get("transition_id")):
            self.violations.append(
                f"{workload_id}: missing {missing} or key {key!r} != transition_id"
            )
            return _json(400, {"error": "contract"})
        transition_id = int(body["transition_id"])

        fault = self._fault(workload_id)
        if fault == "reject":
            status = self.faults.reject[workload_id]
            self.rejected.append((workload_id, transition_id))
            return _json(status, {"error": "rejected", "detail": f"workload {workload_id} refused"})
        if fault == "error":
            return _json(503, {"error": "unavailable"})
        if fault == "too_many":
            return _json(429, {"error": "slow down"})
        if fault == "timeout":
            await asyncio.sleep(self.faults.timeout_sleep)
            return _json(504, {"error": "too late"})
        if fault == "reset":
            return _abort(request)

        if key in self.in_flight:
            self.violations.append(
                f"{workload_id}: key {key} sent while a request with it is in flight"
            )
        self.in_flight.add(key)
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        try:
            if self.faults.process_delay:
                await asyncio.sleep(self.random.uniform(0, self.faults.process_delay))
            answer = self._process(workload_id, transition_id, key, body)
        finally:
            self.in_flight.discard(key)
        if answer.status == 200 and self._roll(self.faults.ack_lost_ratio):
            self.faulted["ack_lost"] += 1
            return _abort(request)
        return answer

    def _process(
        self, workload_id: str, transition_id: int, key: str, body: dict[str, Any]
    ) -> web.Response:
        ids = self.accepted.setdefault(workload_id, [])
        if transition_id in ids:
            self.key_count[key] += 1
            self.received.append(Received(workload_id, transition_id, key, body, time.monotonic()))
            return _json(200, {"ok": True, "replay": True})
        if ids and transition_id < ids[-1]:
            self.violations.append(
                f"{workload_id}: transition {transition_id} arrived after {ids[-1]}"
            )
            return _json(409, {"error": "conflict", "holds": ids[-1]})
        ids.append(transition_id)
        self.key_count[key] += 1
        self.received.append(Received(workload_id, transition_id, key, body, time.monotonic()))
        return _json(200, {"ok": True})

    def _fault(self, workload_id: str) -> str | None:
        f = self.faults
        if workload_id in f.reject:
            return "reject"
        for name, ratio in (
            ("error", f.error_ratio),
            ("too_many", f.too_many_ratio),
            ("timeout", f.timeout_ratio),
            ("reset", f.reset_ratio),
        ):
            if self._roll(ratio):
                self.faulted[name] += 1
                return name
        return None

    def _roll(self, ratio: float) -> bool:
        return ratio > 0 and self.random.random() < ratio


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _abort(request: web.Request) -> web.StreamResponse:
    """Reset the connection without an answer (the client sees a disconnect, never a status)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError  # nothing may be written to an aborted transport
