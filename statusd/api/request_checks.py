"""Reading a request's input: the JSON body (size-capped), the path's workload id.

What the body or the query string must hold is the schema's (statusd.schema: pydantic models,
one ValidationError -> BadInput mapping). Nothing here touches storage: handlers validate
everything first, so bad input never writes. Status codes: 400 for malformed JSON / bad query
parameters, 413 for an oversize body, 422 for a well-formed body whose fields are wrong.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from statusd.errors import BadInput, UnknownWorkload
from statusd.schema.rules import WORKLOAD_ID_RE


async def read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, at most `max_bytes` long (413 beyond, checked while reading)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        # Read in pieces so a chunked body without Content-Length cannot make us buffer more than the cap.
        chunk = await request.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise BadInput(
            "request body is empty: send a JSON object",
            field="body",
            status=400,
            error="malformed_json",
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(
            f"body is not valid JSON: {exc}", field="body", status=400, error="malformed_json"
        ) from exc
    if not isinstance(body, dict):
        raise BadInput(
            f"body must be a JSON object, not {_json_type(body)}",
            field="body",
            status=422,
            error="invalid_body",
        )
    return body


def _too_large(max_bytes: int) -> BadInput:
    return BadInput(
        f"body is larger than {max_bytes} bytes (STATUSD_MAX_BODY_BYTES)",
        field="body",
        status=413,
        error="body_too_large",
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def path_workload_id(request: web.Request) -> str:
    """The path's {id}; ids that could never be registered are simply unknown (404)."""
    workload_id = request.match_info["id"]
    if not WORKLOAD_ID_RE.fullmatch(workload_id):
        raise UnknownWorkload(f"workload {workload_id!r} is not registered")
    return workload_id
