"""What POST /v1/workloads:batch answers: one result per item, in the order sent."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from statusd.schema.responses import Answer, RegisteredWorkload


class RegistrationCreated(Answer):
    """Registered: the single route's 201 body (with its heartbeat_token) under `workload`."""

    status: Literal[201]
    workload: RegisteredWorkload


class RegistrationRefused(Answer):
    """Not registered, nothing written for it: what the single route would have answered (409
    conflict, 422 with `field`), or 503 when the database or Redis failed for its chunk."""

    status: Annotated[int, Field(ge=400, le=599)]
    error: str = Field(description="machine-readable code")
    message: str
    field: str | None = Field(default=None, description="the input field at fault (absent: none)")

    @model_serializer(mode="wrap")
    def _no_null_field(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Absent, not null: the item reads exactly as the single route's error body.
        out: dict[str, Any] = handler(self)
        if out.get("field") is None:
            out.pop("field", None)
        return out


class RegistrationBatchResult(Answer):
    """200, or 503 (+ Retry-After) when some items could not be stored: retry those (marked
    503); the others are registered (201) or refused for good (409, 422)."""

    registered: int
    refused: int
    results: list[RegistrationCreated | RegistrationRefused]
