"""What POST /v1/heartbeats:batch answers: one result per item, in the order sent.

The handler (statusd.ingest.heartbeat_routes.post_batch) is on the ingest hot path and keeps building these
as plain dicts (building a model per item measured slower: bench/batch_results.py); the OpenAPI
document states them from these models, and tests/test_json_answers_match_their_models.py holds
real answers to them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from statusd.schema.responses import RENEWED_TOKEN, Answer


class BatchItemAccepted(Answer):
    """Stored in the Redis stream (the single heartbeat's 202)."""

    status: Literal[202]
    next_heartbeat_s: float = Field(description="send the next heartbeat after this many seconds")
    heartbeat_token: str | None = Field(default=None, description=RENEWED_TOKEN)


class BatchItemRefused(Answer):
    """Not stored: what the single heartbeat would have answered (401, 403, 413, 422), or 503
    redis_unavailable when Redis did not confirm the batch's append (retry that item)."""

    status: Annotated[int, Field(ge=400, le=599)]
    error: str = Field(description="machine-readable code")
    message: str
    field: str | None = Field(default=None, description="the input field at fault (absent: none)")


class BatchResult(Answer):
    """200, or 503 (+ Retry-After, with `error` and `message`) when Redis did not confirm."""

    accepted: int
    rejected: int
    results: list[BatchItemAccepted | BatchItemRefused]
    error: str | None = Field(default=None, description="503 only: redis_unavailable")
    message: str | None = Field(default=None, description="503 only: what to retry")
