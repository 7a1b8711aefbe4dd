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

An ack (or reject) that meets the broker away is the same case: the task is done, but the message
stays in the unacked hash and is delivered once more after the visibility timeout (every task of
statusd is safe to run twice: leases and idempotency keys). kombu logs that as a critical
"Couldn't ack" with a traceback; here it is one warning (`broker.ack_lost`), and the message is
dropped from the channel's own bookkeeping so closing the channel does not restore it a second
time.
"""

from __future__ import annotations

from typing import Any

import structlog
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from statusd.errors import StatusdError

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

log = structlog.get_logger("statusd.worker")


class BrokerConnectionClosed(RedisConnectionError, StatusdError):
    """The channel's connection is already closed: reconnect rather than reuse it. A Redis
    ConnectionError, so kombu's connection-error handling reconnects."""

    transient = True


class QoS(kombu_redis.QoS):
    def ack(self, delivery_tag: str) -> None:
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self._lost(delivery_tag, "ack", exc)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self._lost(delivery_tag, "reject", exc)

    def _lost(self, delivery_tag: str, what: str, exc: Exception) -> None:
        log.warning(
            "broker.ack_lost",
            what=what,
            delivery_tag=delivery_tag,
            error=f"{type(exc).__name__}: {exc}",
            redelivered="after the visibility timeout",
        )
        virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):
    QoS = QoS

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
