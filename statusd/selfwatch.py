"""Who watches the watcher: statusd's own health signals, kept in Redis so every process sees them.

The sweeper records when a sweep last finished and whether it suspects a disruption (most of the
fleet silent at once: more likely our fault or the network's than theirs); /readyz, /metrics, the
status page and `statusd report stale` read them from here. One module, so the keys' formats and
the "stalled" rule live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from statusd.keys import Keys

# The sweeper counts as stalled when no sweep has finished for this many sweep intervals.
STALLED_AFTER_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class DisruptionMode:
    """Disruption mode as the sweeper last judged it. `since` is unix seconds (None when off)."""

    active: bool = False
    since: float | None = None
    stale: int = 0  # stale workloads counted by the sweep that judged it
    tracked: int = 0  # tracked, non-final workloads at that time

    @property
    def fraction(self) -> float:
        return self.stale / self.tracked if self.tracked else 0.0


async def record_sweep_success(redis: Redis, keys: Keys, at: float) -> None:
    await redis.set(keys.sweep_last_success, repr(at))


async def last_sweep_success(redis: Redis, keys: Keys) -> float | None:
    raw = await redis.get(keys.sweep_last_success)
    return float(raw) if raw is not None else None


def sweeper_stalled(last_success: float | None, *, sweep_interval: float, now: float) -> bool:
    """True when no sweep has finished within STALLED_AFTER_INTERVALS intervals (or ever)."""
    if last_success is None:
        return True
    return now - last_success > STALLED_AFTER_INTERVALS * sweep_interval


async def write_disruption(redis: Redis, keys: Keys, disruption: DisruptionMode) -> None:
    await redis.hset(
        keys.disruption,
        mapping={
            "active": int(disruption.active),
            "since": repr(disruption.since) if disruption.since is not None else "",
            "stale": disruption.stale,
            "tracked": disruption.tracked,
        },
    )


async def read_disruption(redis: Redis, keys: Keys) -> DisruptionMode:
    """The current judgement; inactive when none was ever written."""
    raw = await redis.hgetall(keys.disruption)
    if not raw:
        return DisruptionMode()
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    since = fields.get("since") or None
    return DisruptionMode(
        active=fields.get("active") == "1",
        since=float(since) if since else None,
        stale=int(fields.get("stale") or 0),
        tracked=int(fields.get("tracked") or 0),
    )
