"""A short-lived, bounded cache of API key lookups, one per process.

Every API call with a key would otherwise cost a database read. A lookup (found or not) is kept
for STATUSD_KEY_CACHE_TTL seconds, so a revocation made by any process is honoured everywhere
within that time (the setting is capped at 5 s). Expiry needs no database read: the cached record
carries `expires_at`, which is checked on every use.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.access.api_keys import KeyRecord, fetch_key

MAX_ENTRIES = 10_000  # keys in use by one process; least recently fetched go first


class KeyCache:
    def __init__(self, engine: AsyncEngine, ttl_s: float, max_entries: int = MAX_ENTRIES) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, KeyRecord | None]] = OrderedDict()

    async def get(self, key_id: str) -> KeyRecord | None:
        """The key's record as of at most ttl seconds ago (None: no such key)."""
        now = time.monotonic()
        hit = self._entries.get(key_id)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        record = await fetch_key(self._engine, key_id)
        self._entries[key_id] = (now, record)
        self._entries.move_to_end(key_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return record

    def forget(self, key_id: str) -> None:
        """Drop one entry (this process revoked the key: no need to wait out the TTL here)."""
        self._entries.pop(key_id, None)
