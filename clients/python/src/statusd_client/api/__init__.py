"""The platform backend's client for statusd's API (`pip install 'statusd-client[api]'`).

`StatusdApi` (blocking) and `AsyncStatusdApi` (asyncio) need httpx, so they are imported when
first used: the errors and result types below are standard library only, and
`import statusd_client` keeps working in a training image without httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from statusd_client.api.calls import RetryPolicy
from statusd_client.api.errors import (
    AlreadyRegistered,
    BadInput,
    Forbidden,
    NotFound,
    ServerError,
    StatusdApiError,
    TransitionRefused,
    Unauthorized,
    Unavailable,
)
from statusd_client.api.models import (
    ApiKey,
    AuditEntry,
    CreatedKey,
    Deleted,
    Maintenance,
    Registered,
    Registration,
    RegistrationResult,
    Report,
    Silence,
    Transition,
    TransitionResult,
    Workload,
)

if TYPE_CHECKING:
    from statusd_client.api.aio import AsyncStatusdApi
    from statusd_client.api.sync import StatusdApi

__all__ = [
    "AlreadyRegistered",
    "ApiKey",
    "AsyncStatusdApi",
    "AuditEntry",
    "BadInput",
    "CreatedKey",
    "Deleted",
    "Forbidden",
    "Maintenance",
    "NotFound",
    "Registered",
    "Registration",
    "RegistrationResult",
    "Report",
    "RetryPolicy",
    "ServerError",
    "Silence",
    "StatusdApi",
    "StatusdApiError",
    "Transition",
    "TransitionRefused",
    "TransitionResult",
    "Unauthorized",
    "Unavailable",
    "Workload",
]

_NEEDS_HTTPX = {
    "StatusdApi": "statusd_client.api.sync",
    "AsyncStatusdApi": "statusd_client.api.aio",
}


def __getattr__(name: str) -> Any:
    """StatusdApi / AsyncStatusdApi on first use (PEP 562), with a hint when httpx is missing."""
    module = _NEEDS_HTTPX.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name != "httpx":
            raise
        raise ImportError(
            f"statusd_client.{name} needs httpx: pip install 'statusd-client[api]'"
        ) from exc
