"""GET /v1/openapi.json: the OpenAPI 3.1 document, generated, not written.

Components are the schema's pydantic models (statusd.schema: `model_json_schema` of each, refs
collected under #/components/schemas); paths come from the route table (statusd.api.operations);
settings-dependent limits (STATUSD_MAX_BATCH_ITEMS -> the batches' maxItems) from the
settings the app runs with. Nothing here states a field, a type or a limit by hand.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from statusd.api.error_responses import json_response
from statusd.api.operations import OPERATIONS, Auth, Operation, PathParam
from statusd.app_keys import RUNTIME
from statusd.schema import bodies, responses
from statusd.schema.bodies import batch_max_items, quiet_maximum
from statusd.schema.rules import DEFAULT_MAX_QUIET_S, WORKLOAD_ID_PATTERN

try:
    VERSION = version("statusd")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0"

REF = "#/components/schemas/{model}"
SECURITY_SCHEMES = {
    Auth.API_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key (`statusd keys create`, POST /v1/keys) or STATUSD_API_TOKEN "
        "(the bootstrap admin key); each operation's x-statusd-scope names the scope it needs",
    },
    Auth.HEARTBEAT_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "the heartbeat_token returned at registration",
    },
}
PATH_SCHEMAS: dict[PathParam, dict[str, Any]] = {
    PathParam.WORKLOAD_ID: {"type": "string", "pattern": WORKLOAD_ID_PATTERN},
    PathParam.TEXT: {"type": "string"},
}
Mode = Literal["validation", "serialization"]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _models() -> list[tuple[type[BaseModel], Mode]]:
    """Every model the document names: requests as they are validated, answers as serialized."""
    found: dict[type[BaseModel], Mode] = {responses.Error: "serialization"}
    for op in OPERATIONS:
        for model in (op.body, op.form, op.query):
            if model is not None:
                found[model] = "validation"
        if not isinstance(op.answer, str):
            found[op.answer] = "serialization"
        for model in op.error_bodies.values():
            found[model] = "serialization"
    return list(found.items())


def _components(max_batch_items: int, max_quiet_s: int) -> dict[str, Any]:
    _, top = models_json_schema(_models(), ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    for batch in (bodies.HeartbeatBatch, bodies.RegisterBatch):
        schemas[batch.__name__] = batch_max_items(schemas[batch.__name__], max_batch_items)
    for beat in (bodies.Heartbeat, bodies.BatchHeartbeat):
        if beat.__name__ in schemas:
            schemas[beat.__name__] = quiet_maximum(schemas[beat.__name__], max_quiet_s)
    return schemas


def _parameters(op: Operation, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": PATH_SCHEMAS[kind]}
        for name, kind in op.path_params.items()
    ]
    if op.query is None:
        return params
    query = schemas[op.query.__name__]
    for name, prop in query["properties"].items():
        schema = _present(prop)
        param: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
        if "description" in prop:
            param["description"] = prop["description"]
        if schema.get("type") == "array":
            param.update(style="form", explode=True)
        params.append(param)
    return params


def _present(prop: dict[str, Any]) -> dict[str, Any]:
    """A query field's schema as a parameter's: a parameter is absent, never null."""
    schema = {k: v for k, v in prop.items() if k not in ("title", "description")}
    branches = schema.get("anyOf")
    if branches is not None:
        given = [b for b in branches if b != {"type": "null"}]
        if len(given) == 1:
            del schema["anyOf"]
            schema.update(given[0])
    if schema.get("default", 0) is None:
        del schema["default"]
    return schema


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(media: str) -> dict[str, Any]:
    """A non-model body: a JSON document of its own (this one), else text of that media type."""
    return {"schema": {"type": "object" if media == "application/json" else "string"}}


def _responses(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(op.answer, str):
        out[str(op.ok)] = {"description": op.answer, "content": {op.media: _text(op.media)}}
    else:
        out[str(op.ok)] = _json(_ref(op.answer), op.summary)
    if op.alternate_media is not None:
        out[str(op.ok)]["content"][op.alternate_media] = _text(op.alternate_media)
    errors = dict(op.errors)
    if op.needed_scope is not None:
        errors[403] = (
            f"the key's scope is below {op.needed_scope.value!r} (`needed_scope` names it), or "
            "the route spans every workload and the key is limited by labels"
        )
    for status, description in sorted(errors.items()):
        out[str(status)] = _json(_ref(op.error_bodies.get(status, responses.Error)), description)
    for status, description in op.other.items():
        out[str(status)] = {"description": description}
        if status in op.other_media:
            out[str(status)]["content"] = {op.other_media[status]: _text(op.other_media[status])}
    return out


def _operation(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "summary": op.summary,
        "x-statusd-area": op.area.value,
        "security": [] if op.auth is Auth.PUBLIC else [{op.auth.value: []}],
        "responses": _responses(op),
    }
    if op.needed_scope is not None:
        doc["x-statusd-scope"] = op.needed_scope.value
    if params := _parameters(op, schemas):
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    if op.form is not None:
        forms = ("application/x-www-form-urlencoded", "multipart/form-data")
        doc["requestBody"] = {
            "required": True,
            "content": {media: {"schema": _ref(op.form)} for media in forms},
        }
    return doc


@lru_cache(maxsize=4)
def openapi_document(
    max_batch_items: int, max_quiet_s: int = DEFAULT_MAX_QUIET_S
) -> dict[str, Any]:
    """The whole document for an app whose STATUSD_MAX_BATCH_ITEMS is `max_batch_items` and
    STATUSD_MAX_QUIET_S `max_quiet_s`."""
    schemas = _components(max_batch_items, max_quiet_s)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "statusd",
            "version": VERSION,
            "description": "True state of ML workloads: heartbeat push, pull fallback, "
            "one lifecycle.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {auth.value: s for auth, s in SECURITY_SCHEMES.items()},
        },
    }


def documented_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in the document."""
    return {(op.method, op.path) for op in OPERATIONS}


async def openapi_json(request: web.Request) -> web.Response:
    """GET /v1/openapi.json."""
    settings = request.app[RUNTIME].settings
    return json_response(openapi_document(settings.max_batch_items, settings.max_quiet_s))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", openapi_json, allow_head=False)
