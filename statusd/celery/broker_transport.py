"""kombu's Redis transport, with a restart of the broker Redis survived.

When the broker connection drops, Celery's consumer collects the connection (which detaches the
transport from it) and then closes it; closing the channel gives its unacknowledged messages back
to their queues. That second close finds the connection pool already gone, builds a new one from
the detached transport and fails with `AttributeError: 'NoneType' object has no attribute
'hostname'`. It is no connection error, so nothing catches it: the worker stops with
"Unrecoverable error", sweeping and syncing end until something restarts the process.

Here a channel whose transport is detached raises a Redis `ConnectionError` instead, which kombu
and Celery treat as the broker being away: the consumer reconnects. The messages the channel could
not give back stay in the broker's unacked hash, and kombu restores them once the visibility
timeout has passed (statusd.celery.application), as after any worker lost mid-task.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from statusd.errors import StatusdError

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class BrokerConnectionClosed(RedisConnectionError, StatusdError):
    """The channel's connection is already closed: reconnect rather than reuse it. A Redis
    ConnectionError, so kombu's connection-error handling reconnects."""

    transient = True


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise BrokerConnectionClosed("the broker connection was closed; reconnecting")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_path() -> str:
    """The transport as Celery's `broker_transport` setting names it."""
    return f"{__name__}:{Transport.__name__}"
