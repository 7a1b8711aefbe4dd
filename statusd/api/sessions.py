"""Status-page sessions: a random id kept in Redis, carried in an HMAC-signed, expiring cookie.

The cookie never holds the API token: a stolen cookie is one revocable session, not the master
key. It reads ``s1.<session id>.<expires unix s>.<base64url HMAC-SHA256>``, signed with
STATUSD_SECRET over a string no heartbeat token can collide with (a cookie signed with a secret
in STATUSD_SECRET_PREVIOUS still counts, so rotating the secret signs nobody out). A cookie counts
only while its signature holds, its expiry is ahead, AND its id still exists in Redis: logout
deletes the id, so a copy of the cookie stops working at once, in every statusd process.

Redis holds, under the session id, the id of the API key that signed in (or the bootstrap
token's actor id): the session acts with that key's scope and labels, and stops when it is revoked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from statusd.keys import Keys

_VERSION = "s1"
_ID_BYTES = 32  # 256 random bits: not guessable, and not worth enumerating


@dataclass(frozen=True, slots=True)
class SessionCookie:
    session_id: str
    expires_at: int  # unix seconds


def _mac(secret: bytes, session_id: str, expires_at: int) -> str:
    signed = f"statusd-session|{_VERSION}|{session_id}|{expires_at}".encode()
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def encode(secret: bytes, cookie: SessionCookie) -> str:
    """The cookie value for a session (opaque to the browser)."""
    mac = _mac(secret, cookie.session_id, cookie.expires_at)
    return f"{_VERSION}.{cookie.session_id}.{cookie.expires_at}.{mac}"


def decode(secrets: tuple[bytes, ...], value: str, now: float) -> SessionCookie | None:
    """The session a cookie names, if one of `secrets` signed it and it has not expired (no I/O)."""
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != _VERSION or not parts[2].isascii():
        return None
    _, session_id, raw_expiry, mac = parts
    if not raw_expiry.isdigit() or len(raw_expiry) > 12:
        return None
    expires_at = int(raw_expiry)
    if not any(
        hmac.compare_digest(mac.encode(), _mac(secret, session_id, expires_at).encode())
        for secret in secrets
    ):
        return None
    return SessionCookie(session_id, expires_at) if expires_at > now else None


async def open_session(
    redis: Redis, keys: Keys, key_id: str, ttl_s: float, now: float
) -> SessionCookie:
    """Store a new session for API key `key_id` (expiring with the cookie) and return it."""
    cookie = SessionCookie(secrets.token_urlsafe(_ID_BYTES), int(now + ttl_s))
    await redis.set(keys.session(cookie.session_id), key_id, ex=max(1, int(ttl_s)))
    return cookie


async def session_key(redis: Redis, keys: Keys, session_id: str) -> str | None:
    """The key id a session acts for, or None once it was closed (logout) or expired in Redis."""
    raw = await redis.get(keys.session(session_id))
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def close_session(redis: Redis, keys: Keys, session_id: str) -> None:
    """Revoke a session everywhere: every copy of its cookie stops counting."""
    await redis.delete(keys.session(session_id))
