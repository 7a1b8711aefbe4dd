"""Housekeeping: trim the shard streams this process holds, without losing an unapplied entry."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from statusd.ingest.streams import text


async def trim_stream(redis: Redis, group: str, stream: str) -> int:
    """Never MAXLEN (it would drop unapplied entries): trim below min(oldest pending id, the
    group's last-delivered id). Both only move forward, so a threshold read a moment ago is
    still safe when XTRIM runs. Returns the trimmed count."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such key yet
        return 0
    info = next((g for g in groups if text(g["name"]) == group), None)
    if info is None:
        return 0
    threshold = text(info["last-delivered-id"])
    if threshold in ("0-0", ""):
        return 0
    if int(info["pending"]):
        summary = await redis.xpending(stream, group)
        oldest = summary.get("min")
        if oldest is not None:
            threshold = min(threshold, text(oldest), key=_id_key)
    return int(await redis.xtrim(stream, minid=threshold, approximate=True))


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
