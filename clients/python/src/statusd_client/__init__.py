"""statusd-client: tell statusd what your workload is doing (stdlib only, Python 3.9+).

- `Heartbeater` / `AsyncHeartbeater`: push heartbeats from a thread / an asyncio task;
- `serve_status`: the pull-fallback endpoint statusd polls when heartbeats stop;
- `next_seq`: the seq both use, for anyone reporting by hand.
"""

from statusd_client.aio import AsyncHeartbeater
from statusd_client.core import FINAL_STATES, ConfigError
from statusd_client.heartbeater import Heartbeater
from statusd_client.seq import next_seq
from statusd_client.status_server import StatusServer, serve_status
from statusd_client.transport import Refused

__all__ = [
    "FINAL_STATES",
    "AsyncHeartbeater",
    "ConfigError",
    "Heartbeater",
    "Refused",
    "StatusServer",
    "next_seq",
    "serve_status",
]
__version__ = "0.1.0"
