"""A fleet of simulated containers in one asyncio process, and the check of what statusd made of it.

    async with StatusdAPI(url, token) as api:
        fleet = Fleet(api, FleetConfig(count=200, faults=parse_faults("silent=10,dead=5")))
        await fleet.start()            # status server up, every container registered
        try:
            await fleet.run()          # heartbeats + lifecycle walk for `duration` seconds
            summary = await fleet.settle()  # truth frozen; wait (bounded) until statusd agrees
        finally:
            await fleet.stop()

Phases are separate calls so tests can act in between (kill a container, count polls...).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from statusd.lifecycle import Kind, State
from statusd.simulate.container import SimContainer, make_container
from statusd.simulate.control import BATCH_LIMIT, Beat, NewWorkload, StatusdAPI
from statusd.simulate.faults import Fault, assign_faults
from statusd.simulate.server import StatusServer

log = structlog.get_logger("statusd.simulate")
TICKS_PER_INTERVAL = 10  # heartbeats are spread over the interval, not sent in one burst
REGISTER_CONCURRENCY = 32
REGISTER_BATCHES_IN_FLIGHT = 4  # each batch is up to BATCH_LIMIT rows in one transaction

Progress = Callable[[str, dict[str, object]], None]


@dataclass
class FleetConfig:
    count: int = 100
    kinds: tuple[Kind, ...] = (Kind.TRAINING, Kind.NOTEBOOK, Kind.DEPLOYMENT)
    interval: float = 1.0  # heartbeat interval (s)
    duration: float = 30.0  # the lifecycle walk takes this long (s)
    faults: dict[Fault, float] = field(default_factory=dict)
    seed: int = 0
    settle_timeout: float = 60.0  # deadline for statusd to agree after the walk
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    id_prefix: str = "sim"


@dataclass(frozen=True, slots=True)
class FleetVerdict:
    container: SimContainer
    truth: State
    expected: frozenset[State]
    actual: State | None

    @property
    def ok(self) -> bool:
        return self.actual in self.expected


@dataclass
class FleetSummary:
    verdicts: list[FleetVerdict]
    settled_in_s: float

    @property
    def mismatches(self) -> list[FleetVerdict]:
        return [v for v in self.verdicts if not v.ok]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def by_fault(self) -> dict[Fault, tuple[int, int]]:
        """fault -> (containers, correct)."""
        total: Counter[Fault] = Counter()
        good: Counter[Fault] = Counter()
        for v in self.verdicts:
            total[v.container.fault] += 1
            good[v.container.fault] += v.ok
        return {f: (total[f], good[f]) for f in Fault if total[f]}


class Fleet:
    def __init__(
        self, api: StatusdAPI, config: FleetConfig, progress: Progress | None = None
    ) -> None:
        self.api = api
        self.config = config
        self.progress = progress or (lambda _phase, _info: None)
        self.containers: dict[str, SimContainer] = {}
        self._t0 = time.monotonic()
        self.server = StatusServer(self.containers, self.now)
        self._beats: asyncio.Task[None] | None = None
        self.sent_heartbeats = 0  # heartbeats sent so far (to measure the aggregate rate)

    @property
    def label(self) -> str:
        return f"sim-run:{self.config.run_id}"

    def now(self) -> float:
        return time.monotonic() - self._t0

    def build(self) -> None:
        """Create the containers (seeded: the same seed gives the same fleet)."""
        cfg = self.config
        rng = random.Random(cfg.seed)
        faults = assign_faults(cfg.count, cfg.faults, rng)
        for n, fault in enumerate(faults):
            wid = f"{cfg.id_prefix}-{cfg.run_id}-{n:05d}"
            kind = cfg.kinds[n % len(cfg.kinds)]
            self.containers[wid] = make_container(wid, kind, fault, cfg.duration, rng)

    async def start(self) -> None:
        """Serve the status endpoints and register every container through the API."""
        if not self.containers:
            self.build()
        await self.server.start()
        sem = asyncio.Semaphore(REGISTER_CONCURRENCY)
        batches = asyncio.Semaphore(REGISTER_BATCHES_IN_FLIGHT)
        done = 0
        containers = list(self.containers.values())
        chunks = [containers[i : i + BATCH_LIMIT] for i in range(0, len(containers), BATCH_LIMIT)]

        def registration(c: SimContainer) -> NewWorkload:
            labels = {"sim-run": self.config.run_id, "sim-fault": c.fault.value}
            return NewWorkload(c.id, c.kind, self.server.url_for(c.id), labels)

        def registered(count: int) -> None:
            nonlocal done
            before, done = done, done + count
            if done // 100 > before // 100 or done == len(containers):
                self.progress("register", {"done": done, "total": len(containers)})

        async def register_chunk(chunk: list[SimContainer]) -> bool:
            async with batches:
                tokens = await self.api.register_batch([registration(c) for c in chunk])
            if tokens is None:
                return False
            for c in chunk:
                c.token = tokens[c.id]
            registered(len(chunk))
            return True

        async def register_one(c: SimContainer) -> None:
            async with sem:
                reg = registration(c)
                c.token = await self.api.register(
                    reg.workload_id, reg.kind, reg.status_url, reg.labels
                )
            registered(1)

        # The first batch tells whether the server has the batch route; if not, one by one.
        if chunks and not await register_chunk(chunks[0]):
            await asyncio.gather(*(register_one(c) for c in containers))
        else:
            await asyncio.gather(*(register_chunk(chunk) for chunk in chunks[1:]))
        self._t0 = time.monotonic()  # the lifecycle clock starts once everyone is registered
        self._beats = asyncio.create_task(self._beat_loop(), name="simulate-heartbeats")

    async def _beat_loop(self) -> None:
        """Each container heartbeats at the server's pace (`next_heartbeat_s`; the configured
        interval until told), and at once when its state changes, as a well-behaved client does.
        First beats are spread over one interval, not sent in one burst."""
        cfg = self.config
        tick = cfg.interval / TICKS_PER_INTERVAL
        start = time.monotonic()
        due = {
            c.id: start + (n % TICKS_PER_INTERVAL) * tick
            for n, c in enumerate(self.containers.values())
        }
        sent: dict[str, State] = {}
        next_at = start
        pace = cfg.interval
        rng = random.Random(cfg.seed)
        while True:
            t, mono = self.now(), time.monotonic()
            interval = self.api.next_heartbeat_s or cfg.interval
            if interval != pace:
                # Told a new pace: spread over it afresh (jitter), as a real fleet would, rather
                # than keep the old phases, which would turn a longer interval into bursts.
                pace = interval
                due = {wid: mono + rng.uniform(0, interval) for wid in due}
            beats: list[Beat] = []
            for c in self.containers.values():
                if not (c.token and c.heartbeating(t)):
                    continue
                state = c.true_state(t)
                if mono >= due[c.id] or sent.get(c.id) is not state:
                    beats.append(Beat(c.id, c.token, state, c.next_seq()))
                    sent[c.id] = state
                    # Keep each container's phase (no drift into one burst), never catch up.
                    due[c.id] = max(due[c.id] + interval, mono + interval / 2)
            if beats:
                try:
                    await self.api.heartbeat(beats)
                    self.sent_heartbeats += len(beats)
                except Exception as exc:  # keep beating: a real fleet does not stop on one error
                    log.warning("simulate.heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def run(self, duration: float | None = None) -> None:
        """Let the fleet live (heartbeats, lifecycle walk) for `duration` (default: config's)."""
        end = self.now() + (self.config.duration if duration is None else duration)
        while (left := end - self.now()) > 0:
            await asyncio.sleep(min(1.0, left))
            self.progress("run", {"t": round(self.now(), 1), "states": self.true_counts()})

    def true_counts(self) -> dict[str, int]:
        t = self.now()
        return dict(Counter(c.true_state(t).value for c in self.containers.values()))

    async def check(self) -> FleetSummary:
        """Compare each container's truth with what statusd says right now."""
        t = self.now()
        actual = await self.api.states(self.label)
        verdicts = [
            FleetVerdict(c, c.true_state(t), c.expected(t), actual.get(c.id))
            for c in self.containers.values()
        ]
        return FleetSummary(verdicts, settled_in_s=0.0)

    async def settle(self, deadline_s: float | None = None) -> FleetSummary:
        """Freeze every container's lifecycle; wait (bounded) until statusd agrees on all of them."""
        t = self.now()
        for c in self.containers.values():
            c.freeze(t)
        started = time.monotonic()
        deadline = started + (self.config.settle_timeout if deadline_s is None else deadline_s)
        while True:
            summary = await self.check()
            summary.settled_in_s = time.monotonic() - started
            self.progress(
                "settle",
                {
                    "ok": len(summary.verdicts) - len(summary.mismatches),
                    "total": len(summary.verdicts),
                },
            )
            if summary.ok or time.monotonic() >= deadline:
                return summary
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._beats is not None:
            self._beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beats
            self._beats = None
        await self.server.stop()
