"""Error hierarchy. One root, small subclasses; retryability lives on the error."""

from __future__ import annotations


class StatusdError(Exception):
    """Root of every error statusd raises on purpose."""

    transient: bool = False


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
