"""Error hierarchy. One root, small subclasses; retryability lives on the error.

`is_transient` is the one place that decides "retry later" versus "this is bad": it walks the
cause chain, so a driver error wrapped at a boundary (`raise StorageUnavailable(...) from exc`)
and a raw one reaching a caller are judged alike.
"""

from __future__ import annotations

import sys

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError

# How far down a cause chain to look: drivers wrap two or three deep; a loop must still end.
CAUSE_CHAIN_DEPTH = 6


class StatusdError(Exception):
    """Root of every error statusd raises on purpose. `transient`: retrying later may succeed."""

    transient: bool = False


class BadInput(StatusdError):
    """Input statusd cannot accept (API body or query, heartbeat, report filter, CLI option).

    `status` is the HTTP code, `error` the machine-readable code, `field` names the culprit; the
    API answers `as_json()` with `status`, the CLI prints the message."""

    def __init__(
        self, message: str, *, field: str | None = None, status: int = 422, error: str = "invalid"
    ) -> None:
        super().__init__(message)
        self.message, self.field, self.status, self.error = message, field, status, error

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.error, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class ConfigError(StatusdError):
    """The configuration cannot work; the message names the variable to fix."""


class UnknownWorkload(StatusdError):
    """No registered (non-deleted) workload has this id."""


class WorkloadExists(StatusdError):
    """A workload with this id is already registered."""


class TransitionRefused(StatusdError):
    """The lifecycle forbids this change; `rule` names the rule that said no."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class StorageUnavailable(StatusdError):
    """The database cannot be reached or is not answering; retry later."""

    transient = True


class RedisUnavailable(StatusdError):
    """Redis cannot be reached or its pool is exhausted; retry later."""

    transient = True


class InvalidToken(StatusdError):
    """A heartbeat token that statusd did not issue, or that is malformed."""


class UnsafeStatusURL(StatusdError):
    """A status_url that the poller must never fetch (scheme, or address outside the allow-list)."""


# PostgreSQL SQLSTATEs that mean "the server will not talk to us right now", not "this is bad":
# 08 connection exceptions, 57P admin/crash shutdown and cannot-connect-now, 53300 too many
# connections, 55000 on connect when a database has ALLOW_CONNECTIONS false, 40001/40P01
# serialization failure and deadlock (the transaction is safe to retry as a whole), 25006 a write
# refused by a read-only server (a standby, or a primary demoted by a failover: the new primary
# takes the retry).
READ_ONLY_SQL_TRANSACTION = "25006"
_PG_TRANSIENT_PREFIXES = ("08", "57P", "53300", "40001", "40P01", READ_ONLY_SQL_TRANSACTION)
# Connection-level failures of the database (server gone, file moved, SQLite lock timeout) and of
# Redis, and OS-level errors (sockets, files; ConnectionError and TimeoutError are OSErrors).
_TRANSIENT_TYPES = (
    RedisConnectionError,
    RedisTimeoutError,
    OperationalError,
    InterfaceError,
    SATimeoutError,  # the SQLAlchemy pool had no connection within pool_timeout
    OSError,
)
# asyncpg's TargetServerAttributeNotMatched (no listed host accepts writes yet: mid-failover) is
# transient too. It is looked up among the modules already imported instead of imported here:
# only a process that loaded asyncpg (PostgreSQL) can hold one, and the import cost each SQLite
# process ~60 ms of CPU at start.
_ASYNCPG_EXCEPTIONS = "asyncpg.exceptions"


def _transient_types() -> tuple[type[BaseException], ...]:
    asyncpg_error = getattr(
        sys.modules.get(_ASYNCPG_EXCEPTIONS), "TargetServerAttributeNotMatched", None
    )
    return _TRANSIENT_TYPES if asyncpg_error is None else (*_TRANSIENT_TYPES, asyncpg_error)


def _pg_transient(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None)
    if not isinstance(state, str):
        return False
    if state.startswith(_PG_TRANSIENT_PREFIXES):
        return True
    return state == "55000" and "accepting connections" in str(exc)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps: SQLAlchemy's `.orig`, then `__cause__` / `__context__`."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < CAUSE_CHAIN_DEPTH:
        chain.append(seen)
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return chain


def is_standby_refusal(exc: BaseException) -> bool:
    """The server refused a write because it is read-only: a standby, or a demoted primary."""
    return any(
        getattr(seen, "sqlstate", None) == READ_ONLY_SQL_TRANSACTION for seen in _causes(exc)
    )


def is_transient(exc: BaseException) -> bool:
    """The store or a peer is unavailable (retry the same work later), as opposed to "bad".

    Transient, anywhere in the cause chain: a StatusdError that says so (StorageUnavailable,
    RedisUnavailable, a peer's 5xx); Redis connection or timeout errors; the database's
    connection-level failures (an invalidated connection, a PostgreSQL SQLSTATE above, else
    SQLAlchemy's OperationalError/InterfaceError, a pool timeout, no listed host accepting
    writes); OS-level errors. The walk follows SQLAlchemy's `.orig` too: drivers' errors arrive wrapped by
    SQLAlchemy, or raw on connect."""
    chain = _causes(exc)
    if any(isinstance(seen, StatusdError) and seen.transient for seen in chain):
        return True
    if any(isinstance(seen, DBAPIError) and seen.connection_invalidated for seen in chain):
        return True
    # When PostgreSQL said why, its SQLSTATE decides: SQLAlchemy files many of its answers
    # (a prerequisite-state 55000, say) under OperationalError, which alone means "transient".
    said = [seen for seen in chain if isinstance(getattr(seen, "sqlstate", None), str)]
    if said:
        return _pg_transient(said[0])
    transient_types = _transient_types()
    return any(isinstance(seen, transient_types) for seen in chain)
