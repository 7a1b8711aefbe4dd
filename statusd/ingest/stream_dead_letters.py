"""Dead letters: heartbeat entries that kept failing, moved aside with the error; replayable.

An entry goes here after `max_deliveries` failed deliveries (or unreadable fields), so it never
blocks the others. The dead-letter entry keeps every original field plus `error`, `original_id`,
`deliveries` and `dead_at`; `replay` appends the original fields to the shard stream of its
workload again (a new id; consumers judge it by its seq like any other report) and removes the
dead letter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from statusd import metrics
from statusd.ingest.streams import shard_of, text
from statusd.keys import Keys

META_FIELDS = ("error", "original_id", "deliveries", "dead_at")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    original_id: str
    error: str
    deliveries: int
    dead_at_ms: int
    fields: dict[str, str]  # the original entry's fields


async def bury(
    redis: Redis,
    keys: Keys,
    stream: str,
    entry_id: bytes | str,
    fields: dict[bytes, bytes],
    error: str,
    deliveries: int,
) -> None:
    """Move one pending entry of `stream` to the dead-letter stream, then ack it.

    Two steps, not a MULTI: the dead-letter stream is global and the shard stream is in its
    shard's slot (Redis Cluster refuses a MULTI across slots). Copy first, ack second: a crash
    between leaves the entry pending, so it is buried again (a duplicate letter, which a replay
    makes harmless by seq), never lost."""
    dead: dict[Any, Any] = dict(fields)
    for name in META_FIELDS:
        dead.pop(name.encode(), None)
    dead.update(
        error=error[:2000],
        original_id=text(entry_id),
        deliveries=deliveries,
        dead_at=int(time.time() * 1000),
    )
    await redis.xadd(keys.dead_letters, dead)
    await redis.xack(stream, keys.consumer_group, entry_id)
    metrics.DEAD_LETTERS.labels(stream="heartbeats").inc()


def _parse(entry_id: bytes, raw: dict[bytes, bytes]) -> DeadLetter:
    fields = {text(k): text(v) for k, v in raw.items()}
    meta = {name: fields.pop(name, "") for name in META_FIELDS}
    return DeadLetter(
        id=text(entry_id),
        original_id=meta["original_id"],
        error=meta["error"],
        deliveries=int(meta["deliveries"] or 0),
        dead_at_ms=int(meta["dead_at"] or 0),
        fields=fields,
    )


async def list_dead_letters(redis: Redis, keys: Keys, *, count: int = 100) -> list[DeadLetter]:
    """The oldest `count` dead letters."""
    rows: Any = await redis.xrange(keys.dead_letters, count=count)
    return [_parse(entry_id, raw) for entry_id, raw in rows]


async def replay(
    redis: Redis, keys: Keys, *, shards: int, entry_id: str | None = None, count: int = 1000
) -> list[str]:
    """Re-append dead letters (one by id, or the oldest `count`) to their workloads' shard streams.

    Returns the ids of the new stream entries. Each move appends first and deletes second (two
    slots in Redis Cluster: no MULTI), so a crash never loses a dead letter; at worst it is
    replayed twice, which seq makes harmless.
    """
    if entry_id is not None:
        rows: Any = await redis.xrange(keys.dead_letters, min=entry_id, max=entry_id)
    else:
        rows = await redis.xrange(keys.dead_letters, count=count)
    new_ids: list[str] = []
    for dead_id, raw in rows:
        letter = _parse(dead_id, raw)
        # The shard of its workload, so it is applied in order with that workload's other reports
        # (an entry without a workload id can only fail again; any shard will bury it).
        shard = shard_of(letter.fields.get("workload_id", ""), shards)
        new_id = await redis.xadd(keys.heartbeat_shard(shard), letter.fields)  # type: ignore[arg-type]
        await redis.xdel(keys.dead_letters, dead_id)
        new_ids.append(text(new_id))
    return new_ids
