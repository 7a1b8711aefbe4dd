"""The one place a pydantic ValidationError becomes statusd's JSON error codes (errors.BadInput).

Bodies (422): `unknown_field`, `missing_field` (absent or null), `invalid_type` (wrong JSON
type), `invalid_value` (right type, refused value). Query strings (400): `invalid_query`.
`field` names the culprit as a dotted path (`labels.owner`, `match.kind`). Unknown fields are
reported first, then missing ones, then the rest, each group in the model's field order.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar, get_origin

from multidict import MultiMapping
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from statusd.errors import BadInput

M = TypeVar("M", bound=BaseModel)


class BodyError(StrEnum):
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    INVALID_TYPE = "invalid_type"
    INVALID_VALUE = "invalid_value"


QUERY_ERROR = "invalid_query"
_CHOICE_TYPES = frozenset({"enum", "literal_error"})  # a choice: wrong only if it is not text
_KEY_MARK = "[key]"  # pydantic's loc marker for a dict key (labels.<key>.[key])


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if part != _KEY_MARK)


def body_error(error: ErrorDetails) -> BodyError:
    kind = error["type"]
    given = error.get("input")
    if kind == "extra_forbidden":
        return BodyError.UNKNOWN_FIELD
    if kind == "missing":
        return BodyError.MISSING_FIELD
    if kind.endswith("_type") or kind in ("int_from_float", "is_instance_of"):
        # A required field sent as null is as good as absent.
        return BodyError.MISSING_FIELD if given is None else BodyError.INVALID_TYPE
    if kind in _CHOICE_TYPES and not isinstance(given, str):
        return BodyError.INVALID_TYPE
    return BodyError.INVALID_VALUE


def _rank(error: ErrorDetails) -> int:
    return {"extra_forbidden": 0, "missing": 1}.get(error["type"], 2)


def _first(exc: ValidationError) -> ErrorDetails:
    # sorted() is stable: within a rank, pydantic's own order (the model's field order) stands.
    return sorted(exc.errors(include_url=False), key=_rank)[0]


def _message(error: ErrorDetails, field: str) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown field {field!r}"
    if error["type"] == "missing":
        return f"field {field!r} is required"
    return f"{field}: {error['msg']}" if field else error["msg"]


def parse_body(model: type[M], body: Mapping[str, Any], **context: Any) -> M:
    """A JSON object body as `model`, or BadInput(422) naming the first problem's field."""
    try:
        return model.model_validate(body, context=context or None)
    except ValidationError as exc:
        error = _first(exc)
        field = _field(error["loc"]) or "body"
        code = body_error(error)
        if code is BodyError.MISSING_FIELD and error["type"] != "missing":
            message = f"field {field!r} is required (null given)"
        else:
            message = _message(error, field)
        raise BadInput(message, field=field, status=422, error=code.value) from None


def _is_list(model: type[BaseModel], name: str) -> bool:
    info = model.model_fields.get(name)
    if info is None or info.annotation is None:
        return False
    return get_origin(info.annotation) is list or info.annotation is list


def query_values(model: type[BaseModel], query: MultiMapping[str]) -> dict[str, Any]:
    """A query string as model input: list fields take every value, others exactly one."""
    values: dict[str, Any] = {}
    for name in dict.fromkeys(query.keys()):
        given = query.getall(name)
        if _is_list(model, name):
            values[name] = list(given)
        elif len(given) > 1:
            raise BadInput(
                f"query parameter {name!r} given more than once",
                field=name,
                status=400,
                error=QUERY_ERROR,
            )
        else:
            values[name] = given[0]
    return values


def parse_query(model: type[M], query: MultiMapping[str], **overrides: Any) -> M:
    """A query string as `model`, or BadInput(400, invalid_query) naming the parameter.
    `overrides` are values from elsewhere in the request (a header) that win over the query."""
    values = {**query_values(model, query), **overrides}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        error = _first(exc)
        field = _field(error["loc"][:1]) or "query"
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(model.model_fields))
            message = f"unknown query parameter {field!r}; allowed: {allowed}"
        else:
            message = f"{field}: {error['msg']}"
        raise BadInput(message, field=field, status=400, error=QUERY_ERROR) from None
