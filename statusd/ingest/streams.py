"""The sharded heartbeat stream: which shard a workload's reports go to, and the stream's totals.

Why shards: a workload's reports must be applied in stream order, and only one consumer at a time
can guarantee that. So heartbeats are partitioned by workload over `STATUSD_STREAM_SHARDS` streams
and each shard is applied by exactly one lease holder (statusd.ingest.leases). Every reader of
length / lag / pending goes through `stream_stats`, which sums the shards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from statusd.keys import Keys, shard_of

__all__ = ["shard_of", "shard_streams", "ensure_groups", "stream_stats", "StreamStats", "text"]


def shard_streams(keys: Keys, shards: int) -> list[str]:
    """Every shard stream's name, index = shard."""
    return [keys.heartbeat_shard(i) for i in range(shards)]


async def ensure_groups(redis: Redis, keys: Keys, shards: int) -> None:
    """Create the consumer group on every shard stream (and the stream) from id 0: skip nothing."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in shard_streams(keys, shards):
            pipe.xgroup_create(stream, keys.consumer_group, id="0", mkstream=True)
        results = await pipe.execute(raise_on_error=False)
    for result in results:
        if isinstance(result, BaseException) and "BUSYGROUP" not in str(result):
            raise result


@dataclass(frozen=True, slots=True)
class StreamStats:
    length: int  # entries in all shard streams (XLEN)
    lag: int | None  # entries not yet delivered to the consumer group (None: no group anywhere)
    pending: int  # delivered but not acknowledged
    consumers: int  # live consumers (registered in the last lease TTL)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def text(value: object) -> str:
    """A Redis reply field as str (replies are bytes unless decode_responses is set)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def stream_stats(redis: Redis, keys: Keys, shards: int) -> StreamStats:
    """XLEN + XINFO GROUPS of every shard in one pipeline, summed (zeros before any ingest)."""
    streams = shard_streams(keys, shards)
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
        pipe.zcard(keys.shard_consumers)
        results = await pipe.execute(raise_on_error=False)
    length = lag = pending = 0
    any_group = False
    for i in range(shards):
        shard_len, groups = results[2 * i], results[2 * i + 1]
        shard_len = 0 if isinstance(shard_len, BaseException) else int(shard_len)
        length += shard_len
        if isinstance(groups, BaseException):  # no such key: nothing ingested on this shard
            continue
        for group in groups:
            info = {text(k): v for k, v in group.items()}
            if text(info.get("name", "")) != keys.consumer_group:
                continue
            any_group = True
            shard_lag = info.get("lag")
            # Redis reports lag as nil when it cannot compute it (after XDEL/trim): then the whole
            # shard is the safe upper bound for an autoscaler.
            lag += int(shard_lag) if shard_lag is not None else shard_len
            pending += int(info.get("pending", 0))
            break
        else:
            lag += shard_len  # a shard without the group: all of it is undelivered
    consumers = results[-1]
    return StreamStats(
        length=length,
        lag=lag if any_group or not length else None,
        pending=pending,
        consumers=0 if isinstance(consumers, BaseException) else int(consumers),
    )
