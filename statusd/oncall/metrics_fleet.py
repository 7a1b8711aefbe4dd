"""One scrape for the whole fleet: every process pushes its metrics into Redis, /metrics merges.

Why Redis and not prometheus_client's multiprocess mode: Celery workers usually run on other
hosts than `serve`, a shared PROMETHEUS_MULTIPROC_DIR only spans one host, and multiprocess mode
must be switched on before prometheus_client is first imported (fragile across entry points).

How:
- every process that opens a Runtime starts one `MetricsPusher` thread (per Redis URL + prefix);
  every STATUSD_METRICS_PUSH_INTERVAL seconds, and once more on close, it writes its statusd_*
  samples as JSON to `keys.metrics_process(id)` and its push time to `keys.metrics_processes`;
- /metrics sums counters and histograms over the live processes, takes gauges from the freshest
  one, and computes the backlog gauges itself at scrape time (see metrics_endpoint);
- a process silent for 3 intervals (at least 30 s) is gone: its last counters are folded into
  `keys.metrics_retired` (atomically, once, by a Lua script) so fleet totals never go backward.
  Up to one interval of a killed process's counts is lost; a clean close pushes everything.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis as redis_sync
import structlog
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from redis.asyncio import Redis

from statusd.keys import Keys

log = structlog.get_logger("statusd.metrics")
SNAPSHOT_RETENTION_S = 7 * 86400  # an unscraped fleet keeps dead processes' counts this long
SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})
# Gauges the scraping process computes itself (Redis/DB reads): never taken from a push.
SCRAPE_TIME_GAUGES = frozenset(
    {
        "statusd_stream_length",
        "statusd_stream_lag",
        "statusd_stream_pending",
        "statusd_outbox_depth",
        "statusd_outbox_oldest_age_seconds",
        "statusd_outbox_dead",
        "statusd_celery_queue_depth",
    }
)
_RETIRE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local raw = redis.call('GET', KEYS[2])
  if raw then
    local snap = cjson.decode(raw)
    for k, v in pairs(snap['c']) do redis.call('HINCRBYFLOAT', KEYS[3], k, v) end
    redis.call('DEL', KEYS[2])
  end
  return 1
end
return 0
"""


def sample_key(name: str, labels: dict[str, str]) -> str:
    return json.dumps([name, sorted(labels.items())], separators=(",", ":"))


def _families(registry: CollectorRegistry = REGISTRY) -> list[Metric]:
    return [m for m in registry.collect() if m.name.startswith("statusd_")]


@dataclass
class Snapshot:
    """Samples of one process: summed kinds in `c`, gauges in `g` (sample key -> value)."""

    c: dict[str, float] = field(default_factory=dict)
    g: dict[str, float] = field(default_factory=dict)

    def has_data(self) -> bool:
        return any(v for v in self.c.values()) or any(v for v in self.g.values())


def local_snapshot(
    registry: CollectorRegistry = REGISTRY, *, with_scrape_time: bool = False
) -> Snapshot:
    snap = Snapshot()
    for family in _families(registry):
        summed = family.type in SUMMED_TYPES
        if not summed and family.name in SCRAPE_TIME_GAUGES and not with_scrape_time:
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            (snap.c if summed else snap.g)[sample_key(s.name, s.labels)] = float(s.value)
    return snap


class MetricsPusher:
    """A daemon thread pushing this process's snapshot to Redis (sync client: works between
    Celery tasks too, when no event loop is running)."""

    def __init__(self, url: str, keys: Keys, interval: float) -> None:
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.keys, self.interval = keys, interval
        self.client = redis_sync.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.users = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="statusd-metrics-push", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.push()

    def push(self) -> None:
        snap = local_snapshot()
        if not snap.has_data():
            return  # a CLI run that counted nothing should not show up as a process
        payload = json.dumps({"c": snap.c, "g": snap.g})
        with self._lock:
            try:
                pipe = self.client.pipeline(transaction=False)
                pipe.set(
                    self.keys.metrics_process(self.process_id), payload, ex=SNAPSHOT_RETENTION_S
                )
                pipe.zadd(self.keys.metrics_processes, {self.process_id: time.time()})
                pipe.execute()
            except redis_sync.RedisError as exc:
                log.warning("metrics.push_failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        self.push()  # a clean exit loses nothing
        self.client.close()


_pushers: dict[tuple[int, str, str], MetricsPusher] = {}
_pushers_lock = threading.Lock()


def acquire_pusher(url: str, keys: Keys, interval: float) -> MetricsPusher:
    """The pusher of this process for this Redis + prefix (one per process, shared by runtimes)."""
    slot = (os.getpid(), url, keys.prefix)  # after a fork the child starts its own
    with _pushers_lock:
        pusher = _pushers.get(slot)
        if pusher is None:
            pusher = _pushers[slot] = MetricsPusher(url, keys, interval)
            pusher.start()
        pusher.users += 1
        return pusher


def release_pusher(pusher: MetricsPusher) -> None:
    """Drop one user; the last one stops the thread after a final push."""
    with _pushers_lock:
        pusher.users -= 1
        if pusher.users > 0:
            return
        for slot, value in list(_pushers.items()):
            if value is pusher:
                del _pushers[slot]
    pusher.stop()


def local_pusher_id(keys: Keys) -> str | None:
    for (pid, _url, prefix), pusher in _pushers.items():
        if pid == os.getpid() and prefix == keys.prefix:
            return pusher.process_id
    return None


@atexit.register
def _push_on_exit() -> None:
    for pusher in list(_pushers.values()):
        pusher.push()


async def fleet_snapshots(
    redis: Redis, keys: Keys, stale_after: float
) -> tuple[list[Snapshot], dict[str, float]]:
    """Live processes' snapshots (oldest push first) and the retired counters; retires the dead."""
    own = local_pusher_id(keys)
    now = time.time()
    members: list[Any] = list(await redis.zrange(keys.metrics_processes, 0, -1, withscores=True))
    live: list[str] = []
    for raw, score in sorted(members, key=lambda m: m[1]):
        pid = raw.decode() if isinstance(raw, bytes) else str(raw)
        if pid == own:
            continue
        if now - float(score) > stale_after:
            await redis.eval(
                _RETIRE,
                3,
                keys.metrics_processes,
                keys.metrics_process(pid),
                keys.metrics_retired,
                pid,
            )
        else:
            live.append(pid)
    snaps: list[Snapshot] = []
    if live:
        for blob in await redis.mget([keys.metrics_process(p) for p in live]):
            if blob:
                data = json.loads(blob)
                snaps.append(Snapshot(c=data.get("c", {}), g=data.get("g", {})))
    retired = {
        (k.decode() if isinstance(k, bytes) else k): float(v)
        for k, v in (await redis.hgetall(keys.metrics_retired)).items()
    }
    return snaps, retired


def merge(local: Snapshot, others: Iterable[Snapshot], retired: dict[str, float]) -> Snapshot:
    """Counters summed (others + retired + local). Gauges: the freshest non-zero value wins.

    A gauge only one process sets (the sweeper's stale count) reads 0 in every other process;
    "non-zero" keeps those untouched zeros from hiding the real value."""
    total = Snapshot(c=dict(retired))
    for snap in [*others, local]:  # oldest push first, this process (freshest) last
        for k, v in snap.c.items():
            total.c[k] = total.c.get(k, 0.0) + float(v)
        for k, v in snap.g.items():
            if float(v) != 0.0 or k not in total.g:
                total.g[k] = float(v)
    return total


def _family_of(sample_name: str, families: dict[str, Metric]) -> Metric | None:
    for suffix in ("_total", "_bucket", "_count", "_sum", ""):
        if suffix and not sample_name.endswith(suffix):
            continue
        family = families.get(
            sample_name[: len(sample_name) - len(suffix)] if suffix else sample_name
        )
        if family is not None:
            return family
    return None


def _order(item: tuple[str, dict[str, str], float]) -> tuple[Any, ...]:
    name, labels, _ = item
    le = labels.get("le")
    rest = sorted((k, v) for k, v in labels.items() if k != "le")
    return (rest, name.endswith("_bucket") is False, float(le) if le is not None else 0.0, name)


class FleetCollector:
    """Yields the merged statusd_* families (and this process's other default metrics)."""

    def __init__(self, merged: Snapshot, registry: CollectorRegistry = REGISTRY) -> None:
        self.merged, self.registry = merged, registry

    def collect(self) -> Iterable[Metric]:
        template = {m.name: m for m in _families(self.registry)}
        out = {
            name: Metric(m.name, m.documentation, m.type, m.unit) for name, m in template.items()
        }
        grouped: dict[str, list[tuple[str, dict[str, str], float]]] = {}
        for key, value in [*self.merged.c.items(), *self.merged.g.items()]:
            name, labels = json.loads(key)
            family = _family_of(name, template)
            if family is not None:
                grouped.setdefault(family.name, []).append((name, dict(labels), value))
        for fname, samples in grouped.items():
            for name, labels, value in sorted(samples, key=_order):
                out[fname].add_sample(name, labels, value)
        yield from out.values()
        for family in self.registry.collect():
            if not family.name.startswith("statusd_"):
                yield family
