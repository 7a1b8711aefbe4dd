"""Heartbeat bodies: parse and check them strictly and fast (orjson, no models, no I/O).

A heartbeat is exactly `{"workload_id": str, "status": STATE, "seq": int, "detail"?: str,
"quiet_for_s"?: int}` (batch items add `"token"`). Anything else is refused with an error naming the field, before
anything is appended to the stream. The status is checked against the kind carried by the
token (`statusd.tokens`), so a kind's impossible state never reaches the consumers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import cast

import orjson

from statusd.errors import BadInput, InvalidToken
from statusd.lifecycle import Kind, reportable_states
from statusd.schema.rules import (
    DEFAULT_MAX_QUIET_S,
    MAX_DETAIL_BYTES,
    MAX_WORKLOAD_ID,
    SEQ_LIMIT,
    WORKLOAD_ID_RE,
)
from statusd.tokens import TokenClaims, verify

# The limits are the schema's (statusd.schema.rules), stated once: the OpenAPI Heartbeat schema
# (statusd.schema.bodies.Heartbeat) is generated from the same constants, and
# tests/test_heartbeat_schema_agrees_with_ingest.py holds this checker and that schema together.
# Hand-written rather than the pydantic model because it measured faster on this hot path
# (bench/heartbeat_validation.py, docs/benchmarks.md).

REQUIRED = frozenset({"workload_id", "status", "seq"})
ALLOWED = REQUIRED | {"detail", "quiet_for_s"}
BATCH_ALLOWED = ALLOWED | {"token"}
_REPORTABLE: dict[Kind, frozenset[str]] = {
    kind: frozenset(s.value for s in reportable_states(kind)) for kind in Kind
}


@dataclass(frozen=True, slots=True)
class CheckedHeartbeat:
    """One checked heartbeat, ready to append; `generation` comes from the token."""

    workload_id: str
    status: str
    seq: int
    detail: str | None
    generation: int
    # The token's claims, kept when a previous secret signed them: the 202 carries a fresh token.
    renew: TokenClaims | None = None
    quiet_for_s: int = 0  # an announced quiet period (0: none): ingest moves its deadline


def decode_json(body: bytes) -> object:
    """The JSON document in `body`; BadInput(400) when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput(
            f"body is not valid JSON: {exc}", field="body", status=400, error="malformed_json"
        ) from None


def claims_from_header(header: str | None, secrets: tuple[bytes, ...]) -> TokenClaims:
    """Claims of `Authorization: Bearer <token>`; BadInput(401) when missing or not ours."""
    if not header or not header.startswith("Bearer "):
        raise BadInput(
            "missing `Authorization: Bearer <heartbeat token>`", status=401, error="unauthorized"
        )
    return claims_from_token(header[7:].strip(), secrets)


# A container sends the same token with every heartbeat: a token verified once is recognized by a
# dict lookup afterwards instead of two base64 decodes and an HMAC. Only tokens that verified are
# kept (lru_cache does not cache the InvalidToken a forged one raises), keyed by the exact string
# and the secrets (current first); tokens never expire, so a kept one stays valid while its secret
# is among them. The cached claims keep `signed_by_previous`, so a hit still says "renew me", and
# dropping a previous secret changes the key, so its tokens are verified afresh (and refused). Bounded: ~420 B per entry, token
# included, so ~14 MB when full; a fleet larger than that per process just verifies as before.
VERIFIED_TOKENS = 32_768
_verified = functools.lru_cache(maxsize=VERIFIED_TOKENS)(verify)


def claims_from_token(token: object, secrets: tuple[bytes, ...]) -> TokenClaims:
    if not isinstance(token, str) or not token:
        raise BadInput("missing heartbeat token", field="token", status=401, error="unauthorized")
    try:
        return _verified(secrets, token)
    except InvalidToken as exc:
        raise BadInput(
            f"invalid heartbeat token: {exc}", status=401, error="unauthorized"
        ) from None


def _fields(obj: object, allowed: frozenset[str]) -> tuple[str, str, int, str | None]:
    """Shape and types of one heartbeat object (422 naming the field)."""
    if type(obj) is not dict:
        raise BadInput(
            "a heartbeat must be a JSON object", field="body", status=422, error="invalid_body"
        )
    keys = obj.keys()
    if not keys <= allowed:
        extra = sorted(k for k in keys if k not in allowed)[0]
        raise BadInput(f"unknown field {extra!r}", field=extra, status=422, error="unknown_field")
    if not keys >= REQUIRED:
        missing = sorted(REQUIRED - keys)[0]
        raise BadInput(
            f"field {missing!r} is required", field=missing, status=422, error="missing_field"
        )
    workload_id, status, seq = obj["workload_id"], obj["status"], obj["seq"]
    detail = obj.get("detail")
    if type(workload_id) is not str:
        raise BadInput(
            "workload_id must be a string", field="workload_id", status=422, error="invalid_type"
        )
    if WORKLOAD_ID_RE.fullmatch(workload_id) is None:
        raise BadInput(
            f"workload_id must be 1..{MAX_WORKLOAD_ID} characters of A-Z a-z 0-9 . _ : -",
            field="workload_id",
            status=422,
            error="invalid_value",
        )
    if type(status) is not str:
        raise BadInput(
            "status must be a string (a state name)",
            field="status",
            status=422,
            error="invalid_type",
        )
    if type(seq) is not int:  # `type is` on purpose: true/false are ints to isinstance
        raise BadInput("seq must be an integer", field="seq", status=422, error="invalid_type")
    if seq < 0 or seq >= SEQ_LIMIT:
        raise BadInput(
            "seq must be >= 0 and < 2**63", field="seq", status=422, error="invalid_value"
        )
    if detail is not None:
        if type(detail) is not str:
            raise BadInput(
                "detail must be a string", field="detail", status=422, error="invalid_type"
            )
        if len(detail) > MAX_DETAIL_BYTES // 4 and len(detail.encode()) > MAX_DETAIL_BYTES:
            raise BadInput(
                f"detail is longer than {MAX_DETAIL_BYTES} bytes",
                field="detail",
                status=422,
                error="invalid_value",
            )
    return workload_id, status, seq, detail


def _quiet_for(obj: dict[str, object], max_quiet_s: int) -> int:
    """The announced quiet period in seconds (0: none). Over the cap is refused rather than
    shortened: a workload that asked for more must learn it at once, not by being judged stale."""
    quiet = obj.get("quiet_for_s")
    if quiet is None:
        return 0
    if type(quiet) is not int:
        raise BadInput(
            "quiet_for_s must be an integer (seconds)",
            field="quiet_for_s",
            status=422,
            error="invalid_type",
        )
    if not 0 < quiet <= max_quiet_s:
        raise BadInput(
            f"quiet_for_s must be > 0 and <= {max_quiet_s} (STATUSD_MAX_QUIET_S)",
            field="quiet_for_s",
            status=422,
            error="invalid_value",
        )
    return quiet


def check_heartbeat(
    obj: object,
    claims: TokenClaims,
    *,
    allowed: frozenset[str] = ALLOWED,
    max_quiet_s: int = DEFAULT_MAX_QUIET_S,
) -> CheckedHeartbeat:
    """Check one heartbeat object against its token's claims.

    Order: shape and types (422 naming the field), then the token speaks for this workload (403),
    then the status exists for the token's kind (422, field "status").
    """
    workload_id, status, seq, detail = _fields(obj, allowed)
    fields = cast(dict[str, object], obj)  # _fields made sure it is one
    quiet = _quiet_for(fields, max_quiet_s) if "quiet_for_s" in fields else 0
    if claims.workload_id != workload_id:
        raise BadInput(
            "this token speaks for another workload",
            field="workload_id",
            status=403,
            error="forbidden",
        )
    if status not in _REPORTABLE[claims.kind]:
        states = ", ".join(sorted(_REPORTABLE[claims.kind]))
        raise BadInput(
            f"status {status!r} is not a state of a {claims.kind.value} ({states})",
            field="status",
            status=422,
            error="invalid_value",
        )
    renew = claims if claims.signed_by_previous else None
    return CheckedHeartbeat(workload_id, status, seq, detail, claims.generation, renew, quiet)


def check_batch_item(
    item: object, secrets: tuple[bytes, ...], *, max_quiet_s: int = DEFAULT_MAX_QUIET_S
) -> CheckedHeartbeat:
    """One item of a batch: its own token (401), then the same checks as a single heartbeat."""
    if type(item) is not dict:
        raise BadInput(
            "an item must be a JSON object", field="body", status=422, error="invalid_body"
        )
    claims = claims_from_token(item.get("token"), secrets)
    return check_heartbeat(item, claims, allowed=BATCH_ALLOWED, max_quiet_s=max_quiet_s)
