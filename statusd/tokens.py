"""Heartbeat tokens: stateless HMAC-SHA256 over (workload id, kind, registration generation).

Checked on the ingest hot path without SQL or Redis. The kind rides in the token so ingest can
reject a status the kind does not have; the generation rides along to the consumer, which drops
heartbeats whose generation is not the workload's current one (a token issued before a DELETE
never speaks for a later registration of the same id).

Format: ``hb1.<base64url(id)>.<kind>.<generation>.<base64url(mac)>``

Rotation: `verify` takes every secret a token may be signed with, the current one first. Claims
from a token that only a previous secret signed say so (`signed_by_previous`), so ingest answers
such a heartbeat with a token signed by the current secret, and the fleet moves over by itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from statusd.errors import InvalidToken
from statusd.lifecycle import Kind

_VERSION = "hb1"
_KINDS = {k.value: k for k in Kind}


@dataclass(frozen=True, slots=True)
class TokenClaims:
    workload_id: str
    kind: Kind
    generation: int
    # Signed by a secret from STATUSD_SECRET_PREVIOUS, not the current one: due for a fresh token.
    signed_by_previous: bool = False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, workload_id: str, kind: str, generation: int) -> bytes:
    msg = f"{_VERSION}\x00{workload_id}\x00{kind}\x00{generation}".encode()
    return hmac.new(secret, msg, hashlib.sha256).digest()


def issue(secret: bytes, workload_id: str, kind: Kind, generation: int) -> str:
    mac = _mac(secret, workload_id, kind.value, generation)
    return f"{_VERSION}.{_b64(workload_id.encode())}.{kind.value}.{generation}.{_b64(mac)}"


def verify(secrets: tuple[bytes, ...], token: str) -> TokenClaims:
    """The claims of a token signed with one of `secrets` (current first); else InvalidToken."""
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != _VERSION:
        raise InvalidToken("malformed heartbeat token")
    _, raw_id, kind, raw_gen, raw_mac = parts
    try:
        workload_id = _unb64(raw_id).decode()
        generation = int(raw_gen)
        mac = _unb64(raw_mac)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidToken("malformed heartbeat token") from exc
    if kind not in _KINDS:
        raise InvalidToken("malformed heartbeat token")
    for index, secret in enumerate(secrets):
        if hmac.compare_digest(mac, _mac(secret, workload_id, kind, generation)):
            return TokenClaims(workload_id, _KINDS[kind], generation, index > 0)
    raise InvalidToken("heartbeat token signature does not match")


def reissue(secret: bytes, claims: TokenClaims) -> str:
    """The same claims signed with `secret` (the current one): the token a rotated fleet moves to."""
    return issue(secret, claims.workload_id, claims.kind, claims.generation)
