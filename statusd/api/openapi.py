"""The OpenAPI 3.1 document of every HTTP route statusd serves, written as data.

Kept true by tests/test_openapi_matches_routes.py, which walks the aiohttp router: every registered
route must be here with the same method, and every route here must be registered. Each operation
names the area that serves it (`x-statusd-area`), so a route moved or added shows up in review.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web

from statusd.api.errors import json_response
from statusd.lifecycle import Kind, Source, State

try:
    VERSION = version("statusd")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0"

API_TOKEN: list[dict[str, list[str]]] = [{"apiToken": []}]
HEARTBEAT_TOKEN: list[dict[str, list[str]]] = [{"heartbeatToken": []}]
PUBLIC: list[dict[str, list[str]]] = []


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": _ref("WorkloadId"),
}
LIMIT_PARAM = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
}
KIND_FILTER_PARAM = {"name": "kind", "in": "query", "schema": _ref("Kind")}
# Filters and resume point shared by /v1/events and /v1/reports/transitions.
STREAM_PARAMS = [
    KIND_FILTER_PARAM,
    {"name": "workload_id", "in": "query", "schema": {"type": "string"}},
    {
        "name": "last_event_id",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        "description": "resume after this transition id (or the Last-Event-ID header)",
    },
]
LOGIN_FORM = {
    "type": "object",
    "required": ["token"],
    "properties": {"token": {"type": "string", "description": "STATUSD_API_TOKEN"}},
}
COMMON_ERRORS = {
    "401": _error("missing or wrong token"),
    "503": _error("Redis or the database is unreachable; retry after Retry-After seconds"),
}
BODY_ERRORS = {
    "400": _error("malformed JSON"),
    "413": _error("body larger than STATUSD_MAX_BODY_BYTES"),
    "422": _error("unknown field, wrong type or bad value; `field` names it"),
}


def _op(
    area: str,
    summary: str,
    security: list[dict[str, list[str]]],
    responses: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "summary": summary,
        "x-statusd-area": area,
        "security": security,
        "responses": responses,
        **extra,
    }


SCHEMAS: dict[str, Any] = {
    "WorkloadId": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,200}$"},
    "Kind": {"type": "string", "enum": [k.value for k in Kind]},
    "State": {"type": "string", "enum": [s.value for s in State]},
    "Source": {"type": "string", "enum": [s.value for s in Source]},
    "Labels": {
        "type": "object",
        "maxProperties": 64,
        "propertyNames": {"pattern": "^[A-Za-z0-9._/-]{1,100}$"},
        "additionalProperties": {"type": "string", "maxLength": 500},
    },
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "machine-readable code"},
            "message": {"type": "string", "description": "what went wrong, in words"},
            "field": {"type": "string", "description": "the input field or parameter at fault"},
            "rule": {"type": "string", "description": "409 transition_refused: the lifecycle rule"},
        },
    },
    "RegisterRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "kind"],
        "properties": {
            "id": _ref("WorkloadId"),
            "kind": _ref("Kind"),
            "status_url": {
                "type": ["string", "null"],
                "maxLength": 2048,
                "description": "http(s) URL inside STATUSD_POLL_ALLOW_NETS (checked after DNS)",
            },
            "labels": _ref("Labels"),
        },
    },
    "Workload": {
        "type": "object",
        "required": ["id", "kind", "state", "labels", "stale", "synced", "generation"],
        "properties": {
            "id": _ref("WorkloadId"),
            "kind": _ref("Kind"),
            "state": _ref("State"),
            "labels": _ref("Labels"),
            "status_url": {"type": ["string", "null"]},
            "last_seen_at": {"type": ["string", "null"], "format": "date-time"},
            "last_seq": {"type": ["integer", "null"]},
            "state_changed_at": {"type": "string", "format": "date-time"},
            "created_at": {"type": "string", "format": "date-time"},
            "stale": {
                "type": "boolean",
                "description": "no sign of life within STATUSD_HEARTBEAT_TTL (never seen: older than STATUSD_START_TIMEOUT); always in UNREACHABLE/LOST; final states never",
            },
            "synced": {
                "type": "boolean",
                "description": "no transition waiting to reach the main DB",
            },
            "generation": {
                "type": "integer",
                "description": "bumped on each re-registration of the id",
            },
            "flapping": {
                "type": "boolean",
                "description": "more than STATUSD_FLAP_MAX recoveries from UNREACHABLE within STATUSD_FLAP_WINDOW; its flaps raise no alerts",
            },
            "silenced": {
                "type": "boolean",
                "description": "a silence (POST /v1/silences) covers it: tracked, no alerts",
            },
        },
    },
    "RegisteredWorkload": {
        "allOf": [
            _ref("Workload"),
            {
                "type": "object",
                "required": ["heartbeat_token"],
                "properties": {"heartbeat_token": {"type": "string"}},
            },
        ]
    },
    "WorkloadPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("Workload")},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "pass as ?cursor= for the next page",
            },
        },
    },
    "Transition": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "workload_id": _ref("WorkloadId"),
            "generation": {"type": ["integer", "null"]},
            "kind": _ref("Kind"),
            "from": _ref("State"),
            "to": _ref("State"),
            "source": _ref("Source"),
            "reason": {"type": ["string", "null"]},
            "actor": {"type": ["string", "null"]},
            "seq": {"type": ["integer", "null"]},
            "observed_at": {"type": "string", "format": "date-time"},
            "recorded_at": {"type": "string", "format": "date-time"},
        },
    },
    "TransitionPage": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": _ref("Transition")},
            "next_after": {
                "type": ["integer", "null"],
                "description": "pass as ?after= for the next page",
            },
        },
    },
    "TransitionRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["to"],
        "properties": {
            "to": _ref("State"),
            "reason": {"type": ["string", "null"], "maxLength": 1000},
        },
    },
    "TransitionResult": {
        "type": "object",
        "properties": {
            "outcome": {"type": "string", "enum": ["applied", "unchanged"]},
            "state": _ref("State"),
            "transition": {"oneOf": [_ref("Transition"), {"type": "null"}]},
        },
    },
    "Heartbeat": {
        "type": "object",
        "additionalProperties": False,
        "required": ["workload_id", "status", "seq"],
        "properties": {
            "workload_id": _ref("WorkloadId"),
            "status": _ref("State"),
            "seq": {
                "type": "integer",
                "minimum": 0,
                "maximum": 2**63 - 1,
                "description": "per-workload increasing (a millisecond clock works)",
            },
            "detail": {"type": "string"},
        },
    },
    "HeartbeatBatch": {
        "type": "object",
        "description": "a node agent's report for many containers; each item carries its own token",
        "properties": {"items": {"type": "array", "maxItems": 500}},
    },
    "SilenceMatch": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "description": "every matcher given must match",
        "properties": {
            "kind": _ref("Kind"),
            "label": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,100}:.*$"},
            "id": _ref("WorkloadId"),
        },
    },
    "SilenceRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["match", "until", "reason"],
        "properties": {
            "match": _ref("SilenceMatch"),
            "until": {"type": "string", "format": "date-time", "description": "in the future"},
            "reason": {"type": "string", "minLength": 1, "maxLength": 1000},
        },
    },
    "Silence": {
        "type": "object",
        "required": ["id", "match", "until", "reason", "created_at", "active"],
        "properties": {
            "id": {"type": "string"},
            "match": _ref("SilenceMatch"),
            "until": {"type": "string", "format": "date-time"},
            "reason": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "active": {"type": "boolean", "description": "until is still ahead"},
        },
    },
    "Health": {"type": "object", "properties": {"status": {"type": "string"}}},
    "Readiness": {
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            "down": {"type": "array", "items": {"type": "string"}},
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "problems that do not make it unready (a stalled sweeper)",
            },
        },
    },
}

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": _op("api", "Process is up", PUBLIC, {"200": _json(_ref("Health"), "up")}),
    },
    "/readyz": {
        "get": _op(
            "api",
            "Redis and the database answer (a stalled sweeper is a warning, not a 503)",
            PUBLIC,
            {
                "200": _json(_ref("Readiness"), "ready"),
                "503": _json(_ref("Readiness"), "names what is down"),
            },
        ),
    },
    "/v1/openapi.json": {
        "get": _op("api", "This document", PUBLIC, {"200": {"description": "OpenAPI 3.1 JSON"}}),
    },
    "/v1/workloads": {
        "post": _op(
            "api",
            "Register a workload (PENDING); returns its heartbeat token",
            API_TOKEN,
            {
                "201": _json(_ref("RegisteredWorkload"), "registered"),
                "409": _error("id already registered"),
                **BODY_ERRORS,
                **COMMON_ERRORS,
            },
            requestBody={
                "required": True,
                "content": {"application/json": {"schema": _ref("RegisterRequest")}},
            },
        ),
        "get": _op(
            "api",
            "List workloads (keyset pagination on id; API token or page cookie)",
            API_TOKEN,
            {
                "200": _json(_ref("WorkloadPage"), "a page"),
                "400": _error("bad query parameter"),
                **COMMON_ERRORS,
            },
            parameters=[
                {"name": "kind", "in": "query", "schema": _ref("Kind")},
                {"name": "state", "in": "query", "schema": _ref("State")},
                {
                    "name": "stale",
                    "in": "query",
                    "schema": {"type": "boolean"},
                    "description": "applied after the SQL page; a page may hold fewer than `limit` items",
                },
                {
                    "name": "label",
                    "in": "query",
                    "schema": {
                        "type": "array",
                        "items": {"type": "string", "pattern": "^[^:]+:.*$"},
                    },
                    "style": "form",
                    "explode": True,
                    "description": "key:value, repeatable (all must match)",
                },
                LIMIT_PARAM,
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "id_prefix",
                    "in": "query",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{0,200}$"},
                    "description": "only ids starting with this (case-sensitive): the page's search",
                },
            ],
        ),
    },
    "/v1/workloads/{id}": {
        "get": _op(
            "api",
            "One workload with merged liveness, stale and synced",
            API_TOKEN,
            {
                "200": _json(_ref("Workload"), "the workload"),
                "404": _error("not registered"),
                **COMMON_ERRORS,
            },
            parameters=[ID_PARAM],
        ),
        "delete": _op(
            "api",
            "Deregister (history kept)",
            API_TOKEN,
            {
                "200": {"description": "deregistered"},
                "404": _error("not registered"),
                **COMMON_ERRORS,
            },
            parameters=[ID_PARAM],
        ),
    },
    "/v1/workloads/{id}/transitions": {
        "get": _op(
            "api",
            "History, oldest first",
            API_TOKEN,
            {
                "200": _json(_ref("TransitionPage"), "a page of history"),
                "400": _error("bad query parameter"),
                "404": _error("never registered"),
                **COMMON_ERRORS,
            },
            parameters=[
                ID_PARAM,
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                },
                LIMIT_PARAM,
            ],
        ),
        "post": _op(
            "api",
            "Backend-driven change (a user pressed stop: STOPPING)",
            API_TOKEN,
            {
                "200": _json(_ref("TransitionResult"), "applied, or already in that state"),
                "404": _error("not registered"),
                "409": _error("the lifecycle refused it; `rule` says why (recorded)"),
                **BODY_ERRORS,
                **COMMON_ERRORS,
            },
            parameters=[ID_PARAM],
            requestBody={
                "required": True,
                "content": {"application/json": {"schema": _ref("TransitionRequest")}},
            },
        ),
    },
    "/v1/silences": {
        "post": _op(
            "api",
            "Silence the alerts of matching workloads until a time (they stay tracked and shown)",
            API_TOKEN,
            {"201": _json(_ref("Silence"), "created"), **BODY_ERRORS, **COMMON_ERRORS},
            requestBody={
                "required": True,
                "content": {"application/json": {"schema": _ref("SilenceRequest")}},
            },
        ),
        "get": _op(
            "api",
            "Silences, latest end first (?active=true: only those in force)",
            API_TOKEN,
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "items": {"type": "array", "items": _ref("Silence")},
                            "count": {"type": "integer"},
                        },
                    },
                    "the silences",
                ),
                "400": _error("bad query parameter"),
                **COMMON_ERRORS,
            },
            parameters=[{"name": "active", "in": "query", "schema": {"type": "boolean"}}],
        ),
    },
    "/v1/silences/{id}": {
        "delete": _op(
            "api",
            "End a silence now",
            API_TOKEN,
            {"200": {"description": "deleted"}, "404": _error("no such silence"), **COMMON_ERRORS},
            parameters=[
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
        ),
    },
    "/v1/heartbeats": {
        "post": _op(
            "ingest",
            "A container's heartbeat (202 once stored in the Redis stream)",
            HEARTBEAT_TOKEN,
            {
                "202": {
                    "description": 'accepted: {"status": "accepted", "next_heartbeat_s": n}, '
                    "send the next heartbeat after n seconds (server pacing)"
                },
                "403": _error("token is for another workload"),
                **BODY_ERRORS,
                **COMMON_ERRORS,
            },
            requestBody={
                "required": True,
                "content": {"application/json": {"schema": _ref("Heartbeat")}},
            },
        ),
    },
    "/v1/heartbeats:batch": {
        "post": _op(
            "ingest",
            "Many heartbeats at once, one result per item",
            PUBLIC,
            {
                "200": {"description": "per-item results; accepted items carry next_heartbeat_s"},
                **BODY_ERRORS,
                "503": COMMON_ERRORS["503"],
            },
            requestBody={
                "required": True,
                "content": {"application/json": {"schema": _ref("HeartbeatBatch")}},
            },
        ),
    },
    "/v1/reports/stale": {
        "get": _op(
            "oncall",
            "Stale, UNREACHABLE and LOST workloads, worst first (JSON or ?format=csv)",
            API_TOKEN,
            {
                "200": {"description": "the report"},
                "400": _error("bad query parameter"),
                **COMMON_ERRORS,
            },
            parameters=[
                KIND_FILTER_PARAM,
                {
                    "name": "label",
                    "in": "query",
                    "schema": {"type": "array", "items": {"type": "string"}},
                    "style": "form",
                    "explode": True,
                    "description": "key:value, repeatable (all must match)",
                },
                {
                    "name": "older_than",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "a duration: 300, 90s, 5m, 1h30m, 2d",
                },
                {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}},
            ],
        ),
    },
    "/v1/events": {
        "get": _op(
            "oncall",
            "Server-Sent Events of committed transitions (resume with Last-Event-ID)",
            API_TOKEN,
            {
                "200": {
                    "description": "one `transition` event per committed transition",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _error("bad query parameter or Last-Event-ID"),
                **COMMON_ERRORS,
            },
            parameters=STREAM_PARAMS,
        ),
    },
    "/metrics": {
        "get": _op(
            "oncall",
            "Prometheus metrics of this process and the fleet-wide figures; here only while "
            "STATUSD_METRICS_PORT is unset (Bearer STATUSD_METRICS_TOKEN when that is set)",
            PUBLIC,
            {
                "200": {"description": "Prometheus text format"},
                "401": {"description": "STATUSD_METRICS_TOKEN is set and was not sent"},
            },
        ),
    },
    "/": {
        "get": _op("oncall", "Status page for humans", PUBLIC, {"200": {"description": "HTML"}}),
    },
    "/v1/reports/summary": {
        "get": _op(
            "oncall",
            "Counts per kind x state, stale counts, sync backlog, stream lag (API token or page cookie)",
            API_TOKEN,
            {"200": {"description": "the summary"}, **COMMON_ERRORS},
        ),
    },
    "/v1/reports/transitions": {
        "get": _op(
            "oncall",
            "Newest transitions first; `last_id` is where /v1/events resumes (API token or page cookie)",
            API_TOKEN,
            {
                "200": {"description": "recent transitions"},
                "400": _error("bad query parameter"),
                **COMMON_ERRORS,
            },
            parameters=[
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                },
                *STREAM_PARAMS,
            ],
        ),
    },
    "/v1/reports/workloads/{id}": {
        "get": _op(
            "oncall",
            "One workload's story: workload, timeline bands, transitions, refused observations,"
            " polls, sync (API token or page cookie)",
            API_TOKEN,
            {"200": {"description": "the story"}, "404": _error("not registered"), **COMMON_ERRORS},
            parameters=[ID_PARAM],
        ),
    },
    "/v1/reports/history": {
        "get": _op(
            "oncall",
            "Counts by state at each step of a recent window, rebuilt from the transition history"
            " (API token or page cookie)",
            API_TOKEN,
            {
                "200": {"description": "samples, oldest first; the last is now"},
                "400": _error("bad query parameter"),
                **COMMON_ERRORS,
            },
            parameters=[
                {"name": "window", "in": "query", "schema": {"type": "string", "default": "1h"}},
                {"name": "step", "in": "query", "schema": {"type": "string", "default": "1m"}},
                {"name": "kind", "in": "query", "schema": _ref("Kind")},
            ],
        ),
    },
    "/v1/reports/selfwatch": {
        "get": _op(
            "oncall",
            "statusd's own health for the page's banners: disruption mode, sweeper stalled"
            " (API token or page cookie)",
            API_TOKEN,
            {"200": {"description": "disruption and sweeper"}, **COMMON_ERRORS},
        ),
    },
    "/workloads": {
        "get": _op(
            "oncall",
            "Status page: the fleet list (HTML; signed-in cookie, else redirect to /)",
            PUBLIC,
            {"200": {"description": "HTML"}, "303": {"description": "not signed in"}},
        ),
    },
    "/workloads/{id}": {
        "get": _op(
            "oncall",
            "Status page: one workload (HTML; signed-in cookie, else redirect to /)",
            PUBLIC,
            {
                "200": {"description": "HTML"},
                "303": {"description": "not signed in"},
                "404": {"description": "HTML: no such workload"},
            },
            parameters=[ID_PARAM],
        ),
    },
    "/login": {
        "post": _op(
            "oncall",
            "Status page sign-in: form field `token` (the API token) opens a server-side session "
            "and sets the HttpOnly, SameSite=Strict statusd_session cookie (a signed session id)",
            PUBLIC,
            {
                "303": {"description": "signed in, redirect to /"},
                "400": _error("the form body cannot be parsed"),
                "401": {"description": "HTML form with an error"},
                "503": COMMON_ERRORS["503"],
            },
            requestBody={
                "required": True,
                "content": {
                    media: {"schema": LOGIN_FORM}
                    for media in ("application/x-www-form-urlencoded", "multipart/form-data")
                },
            },
        ),
    },
    "/logout": {
        "post": _op(
            "oncall",
            "Status page sign-out: revokes the session server-side",
            PUBLIC,
            {"303": {"description": "redirect to /"}},
        ),
    },
    "/static/{name}": {
        "get": _op(
            "oncall",
            "Status page assets (app.js, style.css, ui.js, fleet.js, workload.js, overview.js,"
            " workloads.css)",
            PUBLIC,
            {"200": {"description": "JavaScript or CSS"}, "404": _error("no such asset")},
            parameters=[
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
        ),
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "statusd",
        "version": VERSION,
        "description": "True state of ML workloads: heartbeat push, pull fallback, one lifecycle.",
    },
    "servers": [{"url": "/"}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "apiToken": {"type": "http", "scheme": "bearer", "description": "STATUSD_API_TOKEN"},
            "heartbeatToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "the heartbeat_token returned at registration",
            },
        },
    },
}


def documented_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in the document."""
    return {(method.upper(), path) for path, ops in PATHS.items() for method in ops}


async def openapi_json(request: web.Request) -> web.Response:
    """GET /v1/openapi.json."""
    return json_response(DOCUMENT)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", openapi_json, allow_head=False)
