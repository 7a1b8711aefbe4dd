"""The `seq` every heartbeat and status answer carries: nanoseconds since the epoch, never repeating.

Why time-based rather than a persisted counter: a restarted container usually starts on a fresh
filesystem (often on another node), so a counter file would start over at 0 and statusd would
ignore every report until it caught up with the old value. Wall-clock nanoseconds keep increasing
across restarts without any state, as long as the clocks involved are NTP-synced (a restart takes
seconds; skew is milliseconds). Within one process the value is strictly increasing even if the
wall clock steps back (max(now, last + 1)). It stays below 2^63 (statusd's limit) until 2262.

Heartbeats and the status endpoint must draw from the same clock: statusd compares their seqs
with each other, and a millisecond seq would never be newer than a nanosecond one.
"""

from __future__ import annotations

import threading
import time

SEQ_LIMIT = 2**63  # statusd refuses seq >= 2^63

# Re-entrant: a SIGTERM handler runs on the main thread and may draw a seq while the main thread
# was inside next_seq() (a plain Lock would deadlock there).
_lock = threading.RLock()
_last = 0


def next_seq() -> int:
    """A seq greater than every one this process produced before (and than any earlier run's)."""
    global _last
    with _lock:
        value = max(time.time_ns(), _last + 1)
        _last = value
    return value
