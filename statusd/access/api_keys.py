"""API keys in the database: create (the secret is returned once), list, revoke, look up.

A key reads ``sk1.<id>.<secret>``: the id finds the row by primary key, and the SHA-256 digest of
the whole key is compared in constant time. The secret is 256 random bits, so a plain digest is
enough (a slow password hash guards guessable secrets, and a lookup on every API call must be
cheap). The database never holds the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from statusd.access.scopes import Principal, Scope
from statusd.db import reading, transaction
from statusd.errors import BadInput
from statusd.tables import API_KEYS

_VERSION = "sk1"
_ID_BYTES = 8
_SECRET_BYTES = 32
_KEY_RE = re.compile(r"sk1\.([0-9a-f]{16})\.[A-Za-z0-9_-]{20,100}")
_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
_DURATION_RE = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_LABELS = 20


def parse_duration(text: str, *, field: str = "expires_in") -> timedelta:
    """`8s`, `15m`, `12h`, `90d` as a timedelta; BadInput (422 naming `field`) otherwise."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise BadInput(
            f"{field} must be a positive number followed by s, m, h or d (e.g. 15m, 90d); "
            f"got {text[:40]!r}",
            field=field,
            status=422,
            error="invalid_value",
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])


def parse_label(text: str, *, field: str = "labels") -> tuple[str, str]:
    """`k:v` as a pair; BadInput (422 naming `field`) when either side is empty."""
    key, sep, value = text.partition(":")
    if not sep or not key.strip() or not value.strip():
        raise BadInput(
            f"{field}: a label is key:value; got {text[:60]!r}",
            field=field,
            status=422,
            error="invalid_value",
        )
    return key.strip(), value.strip()


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def is_key_id(text: str) -> bool:
    """True when `text` is shaped like a key id (anything else names no key)."""
    return _KEY_ID_RE.fullmatch(text) is not None


def key_id_of(presented: str) -> str | None:
    """The id part of something shaped like an API key, else None (not worth a lookup)."""
    match = _KEY_RE.fullmatch(presented)
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as listed: everything but the secret (which is not stored)."""

    id: str
    name: str
    scope: Scope
    labels: dict[str, str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    digest: str

    def principal(self) -> Principal:
        return Principal(self.id, self.name, self.scope, dict(self.labels))

    def usable(self, now: datetime) -> bool:
        """Not revoked and not expired at `now`."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope.value,
            "labels": dict(self.labels),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _record(row: Mapping[str, Any]) -> KeyRecord:
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        scope=Scope(row["scope"]),
        labels=dict(row["labels"] or {}),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        digest=row["digest"],
    )


@dataclass(frozen=True, slots=True)
class NewKey:
    record: KeyRecord
    key: str  # shown once, never stored


async def create_key(
    engine: AsyncEngine,
    *,
    name: str,
    scope: Scope,
    labels: Mapping[str, str],
    expires_in: timedelta | None,
    now: datetime,
) -> NewKey:
    """Store a new key (its digest) and return it with the key, the only time it is seen."""
    key_id = secrets.token_hex(_ID_BYTES)
    key = f"{_VERSION}.{key_id}.{secrets.token_urlsafe(_SECRET_BYTES)}"
    row = {
        "id": key_id,
        "name": name,
        "scope": scope,
        "labels": dict(labels),
        "digest": digest(key),
        "created_at": now,
        "expires_at": now + expires_in if expires_in is not None else None,
        "revoked_at": None,
    }
    async with transaction(engine) as conn:
        await conn.execute(insert(API_KEYS).values(**row))
    return NewKey(_record(row), key)


async def list_keys(engine: AsyncEngine) -> list[KeyRecord]:
    """Every key, oldest first (revoked and expired ones too)."""
    async with reading(engine) as conn:
        rows = await conn.execute(select(API_KEYS).order_by(API_KEYS.c.created_at, API_KEYS.c.id))
        return [_record(dict(r._mapping)) for r in rows]


async def revoke_key(engine: AsyncEngine, key_id: str, now: datetime) -> KeyRecord | None:
    """Revoke a key (idempotent: an already revoked key keeps its first revocation time).

    None when no key has that id."""
    async with transaction(engine) as conn:
        await conn.execute(
            update(API_KEYS)
            .where(API_KEYS.c.id == key_id, API_KEYS.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        row = (await conn.execute(select(API_KEYS).where(API_KEYS.c.id == key_id))).first()
    return _record(dict(row._mapping)) if row is not None else None


async def fetch_key(engine: AsyncEngine, key_id: str) -> KeyRecord | None:
    async with reading(engine) as conn:
        row = (await conn.execute(select(API_KEYS).where(API_KEYS.c.id == key_id))).first()
    return _record(dict(row._mapping)) if row is not None else None


def matches(record: KeyRecord | None, presented: str) -> bool:
    """True when `presented` is the key whose digest `record` holds (constant time)."""
    return record is not None and hmac.compare_digest(record.digest, digest(presented))


def labels_from(pairs: Sequence[str], *, field: str = "labels") -> dict[str, str]:
    """`["k:v", ...]` as a dict; 422 naming `field` on a malformed pair or too many."""
    if len(pairs) > MAX_LABELS:
        raise BadInput(
            f"at most {MAX_LABELS} labels", field=field, status=422, error="invalid_value"
        )
    return dict(parse_label(p, field=field) for p in pairs)
