"""What statusd could have heard: ingest's "I am listening" beat, and the pace it asks of workloads.

Silence only proves something over time during which ingest was accepting. Each ingest (`serve`)
process beats into `keys.ingest_listening` about every second; the same script keeps
`keys.ingest_listening_since`, the start of the current unbroken listening spell (a gap of more
than LISTEN_GAP_S without any process's beat starts a new one). What that record means for
staleness (deaf until STATUSD_STARTUP_GRACE of listening has passed, silence counted up to the last
beat) is statusd.staleness's to say.

Server pacing (Nomad's rate-scaled heartbeat TTL): a workload is told to send its next heartbeat
after max(TTL / 3, tracked / STATUSD_MAX_HEARTBEATS_PER_S) seconds, so the fleet's aggregate rate
stays under the cap (statusd.staleness.silence_allowed adds grace to it, so nobody is stale for
obeying). `tracked` is the size of the liveness sets
(last_seen + pending_since), read by the beat once a second, never per request.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from dataclasses import dataclass

import orjson
import structlog
from redis.asyncio import Redis

from statusd.keys import Keys
from statusd.liveness import tracked
from statusd.redis_runtime import Script
from statusd.repeating import Repeating
from statusd.settings import Settings

log = structlog.get_logger("statusd.hearing")

LISTEN_BEAT_S = 1.0
# No ingest beat for longer than this: ingest was down (a couple of beats missed, with room for a
# loaded event loop).
LISTEN_GAP_S = 3.0
# A process that has not beaten for this long is gone: its entry is dropped by the others' beats.
# Never all of them: the newest entry stays, so "ingest is down" is still known during an outage.
FORGET_PROCESS_S = 3600.0
PACE_STEP_S = 0.1  # announced intervals are rounded up to this

# KEYS: ingest_listening, ingest_listening_since, ingest_outages (one slot: the global tag).
# ARGV: process id, now, gap, forget-after. Returns listening_since. A gap between the newest beat
# and now is recorded as an outage (the newest OUTAGES_KEPT of them). The fleet size is read
# apart, shard by shard.
OUTAGES_KEPT = 10_000
BEAT_SCRIPT = """
local now, gap = tonumber(ARGV[2]), tonumber(ARGV[3])
local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local since = redis.call('GET', KEYS[2])
if #newest == 0 then
  -- never listened here before: a new install (or Redis lost its data, and statusd.recovery gives
  -- every workload a fresh sign of life): no silence to excuse
  if not since then since = '0' end
  redis.call('SET', KEYS[2], since)
elseif (not since) or tonumber(newest[2]) < now - gap then
  if tonumber(newest[2]) < now - gap then
    redis.call('ZADD', KEYS[3], newest[2], newest[2] .. '|' .. ARGV[2])
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1 - tonumber(ARGV[5]))
  end
  since = ARGV[2]
  redis.call('SET', KEYS[2], since)
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))
return since
"""


def paced_interval(tracked: int, settings: Settings) -> float:
    """Seconds a workload is told to wait before its next heartbeat (>= TTL / 3)."""
    interval = max(settings.heartbeat_ttl / 3, tracked / settings.max_heartbeats_per_s)
    return round(math.ceil(round(interval / PACE_STEP_S, 6)) * PACE_STEP_S, 3)


@dataclass(frozen=True, slots=True)
class Hearing:
    """Ingest's listening record and the fleet size, as read from Redis at one moment."""

    last_beat: float | None  # newest beat of any ingest process; None: no ingest ever beat here
    listening_since: float  # start of the current unbroken listening spell
    tracked: int  # workloads in the liveness sets


async def read_hearing(redis: Redis, keys: Keys) -> Hearing:
    """One round trip: the newest listening beat, the listening spell, the fleet size."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrevrange(keys.ingest_listening, 0, 0, withscores=True)
        pipe.get(keys.ingest_listening_since)
        newest, since = await pipe.execute()
    seen, pending = await tracked(redis, keys)
    return Hearing(
        last_beat=float(newest[0][1]) if newest else None,
        listening_since=float(since) if since is not None else 0.0,
        tracked=int(seen) + int(pending),
    )


class Pace:
    """This ingest process's answer to an accepted heartbeat: built once per change of the paced
    interval, so the hot path only reads an attribute (no Redis round trip per request)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.interval = 0.0
        self.accepted_body = b""
        self.update(0)

    def update(self, tracked: int) -> None:
        interval = paced_interval(tracked, self._settings)
        if interval != self.interval:
            self.interval = interval
            self.accepted_body = orjson.dumps(
                {"status": "accepted", "next_heartbeat_s": self.interval}
            )


class ListeningBeat:
    """The background task of an ingest process: beat, and refresh the pace, every second."""

    def __init__(self, redis: Redis, keys: Keys, pace: Pace) -> None:
        self._redis = redis
        self._keys = keys
        self._pace = pace
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._script = Script(redis, BEAT_SCRIPT)
        self._repeating = Repeating(
            self._beat_now,
            LISTEN_BEAT_S,
            name="ingest-listening-beat",
            log=log,
            failed_event="ingest.listening_beat_failed",
        )

    async def beat(self, now: float) -> None:
        keys = self._keys
        await self._script(
            keys=[keys.ingest_listening, keys.ingest_listening_since, keys.ingest_outages],
            args=[self.process_id, repr(now), LISTEN_GAP_S, FORGET_PROCESS_S, OUTAGES_KEPT],
        )
        self._pace.update(sum(await tracked(self._redis, keys)))

    async def _beat_now(self) -> None:
        await self.beat(time.time())

    def start(self) -> None:
        self._repeating.start()

    async def stop(self) -> None:
        """Stop beating. The entry stays: a stopped ingest must still read as "was listening
        until then", so the sweeper knows an outage started."""
        await self._repeating.stop()
