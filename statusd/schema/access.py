"""API keys and the audit trail: the bodies, queries and answers of /v1/keys and /v1/audit."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from statusd.access.scopes import Scope
from statusd.schema.bodies import Body
from statusd.schema.queries import Query
from statusd.schema.responses import Answer
from statusd.schema.rules import DEFAULT_LIMIT
from statusd.schema.types import AwareTime, Labels, Limit

DURATION_PATTERN = r"^[1-9][0-9]{0,8}[smhd]$"
# Printable text only: a control character (NUL above all) is nothing a name or filter means, and
# PostgreSQL refuses NUL in text.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"


class KeyRequest(Body):
    """POST /v1/keys."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)]
    scope: Scope
    labels: Labels | None = Field(
        default=None, description="the key sees and changes only workloads carrying all of them"
    )
    expires_in: Annotated[str, Field(pattern=DURATION_PATTERN)] | None = Field(
        default=None, description="8s, 15m, 12h, 90d; absent: never expires"
    )


class KeyPublic(Answer):
    """A key as listed: never its secret."""

    id: str
    name: str
    scope: Scope
    labels: dict[str, str]
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class KeyCreated(Answer):
    """201 of POST /v1/keys: the only answer that holds the key itself."""

    id: str
    key: str = Field(description="shown once; only its digest is stored")
    name: str
    scope: Scope
    labels: dict[str, str]
    expires_at: str | None


class KeyPage(Answer):
    items: list[KeyPublic]
    count: int


class AuditQuery(Query):
    """GET /v1/audit: oldest first; every filter given must match."""

    actor: Annotated[str, Field(max_length=200, pattern=TEXT_PATTERN)] | None = Field(
        default=None, description="a key id or name (or `bootstrap`, `anonymous`)"
    )
    action: Annotated[str, Field(max_length=64, pattern=TEXT_PATTERN)] | None = None
    target: Annotated[str, Field(max_length=300, pattern=TEXT_PATTERN)] | None = None
    since: AwareTime | None = Field(default=None, description="ISO time with an offset")
    cursor: Annotated[str, Field(max_length=40)] | None = Field(
        default=None, description="next_cursor of the previous page"
    )
    limit: Limit = DEFAULT_LIMIT


class AuditEntry(Answer):
    id: int
    at: str
    actor_id: str
    actor_name: str
    action: str
    target: str | None
    outcome: int = Field(description="the HTTP status answered")
    client_address: str | None


class AuditPage(Answer):
    items: list[AuditEntry]
    next_cursor: str | None
