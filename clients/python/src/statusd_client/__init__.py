"""statusd-client: tell statusd what your workload is doing (stdlib only, Python 3.9+).

- `Heartbeater` / `AsyncHeartbeater`: push heartbeats from a thread / an asyncio task;
- `serve_status`: the pull-fallback endpoint statusd polls when heartbeats stop;
- `next_seq`: the seq both use, for anyone reporting by hand;
- `StatusdApi` / `AsyncStatusdApi` (the `api` extra, with httpx): the platform backend's client
  of statusd's API, with its errors and result types (statusd_client.api), imported on first use.
"""

import importlib
from typing import Any

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

_API = "statusd_client.api"


def __getattr__(name: str) -> Any:
    """The API client's names (statusd_client.api.__all__), loaded only when first asked for."""
    api = importlib.import_module(_API)
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
