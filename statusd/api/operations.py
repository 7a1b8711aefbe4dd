"""Every HTTP route statusd serves, as typed data: who serves it, what it takes, what it answers.

The OpenAPI document (statusd.api.openapi) is generated from this table and the schema's models
(statusd.schema); tests/test_openapi_matches_routes.py walks the aiohttp router so a route
added, moved or dropped shows up here or fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel

from statusd.access.scopes import Scope
from statusd.schema import (
    access,
    batch_results,
    bodies,
    queries,
    registration_results,
    reports,
    responses,
    story,
)


class Area(StrEnum):
    API = "api"
    INGEST = "ingest"
    ONCALL = "oncall"


class Auth(StrEnum):
    API_TOKEN = "apiToken"
    HEARTBEAT_TOKEN = "heartbeatToken"
    PUBLIC = "public"


class PathParam(StrEnum):
    """What a `{name}` in a path holds."""

    WORKLOAD_ID = "workload id"
    TEXT = "text"


# Error statuses most routes share, with what each means there.
UNAVAILABLE = {503: "Redis or the database is unreachable; retry after Retry-After seconds"}
COMMON = {401: "missing or wrong token", **UNAVAILABLE}
BODY = {
    400: "malformed JSON",
    413: "body larger than STATUSD_MAX_BODY_BYTES",
    422: "unknown field, wrong type or bad value; `field` names it",
}
QUERY = {400: "bad query parameter; `field` names it"}


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    area: Area
    summary: str
    auth: Auth
    ok: int
    answer: type[BaseModel] | str  # a response model, or a description of a non-JSON answer
    errors: dict[int, str] = field(default_factory=dict)  # answered as responses.Error...
    error_bodies: dict[int, type[BaseModel]] = field(default_factory=dict)  # ...unless named here
    body: type[BaseModel] | None = None
    form: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path_params: dict[str, PathParam] = field(default_factory=dict)
    media: str = "application/json"  # of a non-model answer (text/event-stream, text/html...)
    alternate_media: str | None = None  # a model answer also given as text in this type (csv)
    other: dict[int, str] = field(default_factory=dict)  # non-error, non-JSON answers (303)
    scope: Scope | None = None  # API-key routes: the scope needed (None: GET read, else write)
    other_media: dict[int, str] = field(default_factory=dict)  # ...and the media type of each

    @property
    def needed_scope(self) -> Scope | None:
        """The key scope this route needs (None: not a key route)."""
        if self.auth is not Auth.API_TOKEN:
            return None
        if self.scope is not None:
            return self.scope
        return Scope.READ if self.method == "GET" else Scope.WRITE


_ID = {"id": PathParam.WORKLOAD_ID}

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/healthz", Area.API, "Process is up", Auth.PUBLIC, 200, responses.Health),
    Operation(
        "GET",
        "/readyz",
        Area.API,
        "Redis and the database answer (a stalled sweeper is a warning, not a 503)",
        Auth.PUBLIC,
        200,
        responses.Readiness,
        errors={503: "names what is down (a Readiness body)"},
    ),
    Operation(
        "GET", "/v1/openapi.json", Area.API, "This document", Auth.PUBLIC, 200, "OpenAPI 3.1 JSON"
    ),
    Operation(
        "POST",
        "/v1/workloads",
        Area.API,
        "Register a workload (PENDING); returns its heartbeat token",
        Auth.API_TOKEN,
        201,
        responses.RegisteredWorkload,
        errors={409: "id already registered", **BODY, **COMMON},
        body=bodies.RegisterRequest,
    ),
    Operation(
        "POST",
        "/v1/workloads:batch",
        Area.API,
        "Register many workloads (at most STATUSD_MAX_BATCH_ITEMS), one result per item, in "
        "order: 201 with the workload and its heartbeat token, or the single route's 409/422",
        Auth.API_TOKEN,
        200,
        registration_results.RegistrationBatchResult,
        errors={
            **BODY,
            413: "body larger than STATUSD_MAX_BODY_BYTES per item, or more items than "
            "STATUSD_MAX_BATCH_ITEMS (`too_many_items`)",
            **COMMON,
            503: "the database or Redis failed: the items marked 503 were not stored; retry "
            "them after Retry-After seconds (the body is a RegistrationBatchResult)",
        },
        error_bodies={503: registration_results.RegistrationBatchResult},
        body=bodies.RegisterBatch,
    ),
    Operation(
        "GET",
        "/v1/workloads",
        Area.API,
        "List workloads (keyset pagination on id; API token or page cookie)",
        Auth.API_TOKEN,
        200,
        responses.WorkloadPage,
        errors={**QUERY, **COMMON},
        query=queries.WorkloadQuery,
    ),
    Operation(
        "GET",
        "/v1/workloads/{id}",
        Area.API,
        "One workload with merged liveness, stale and synced",
        Auth.API_TOKEN,
        200,
        responses.Workload,
        errors={404: "not registered", **COMMON},
        path_params=_ID,
    ),
    Operation(
        "DELETE",
        "/v1/workloads/{id}",
        Area.API,
        "Deregister (history kept)",
        Auth.API_TOKEN,
        200,
        responses.Deleted,
        errors={404: "not registered", **COMMON},
        path_params=_ID,
    ),
    Operation(
        "GET",
        "/v1/workloads/{id}/transitions",
        Area.API,
        "History, oldest first",
        Auth.API_TOKEN,
        200,
        responses.TransitionPage,
        errors={**QUERY, 404: "never registered", **COMMON},
        query=queries.HistoryQuery,
        path_params=_ID,
    ),
    Operation(
        "POST",
        "/v1/workloads/{id}/transitions",
        Area.API,
        "Backend-driven change (a user pressed stop: STOPPING)",
        Auth.API_TOKEN,
        200,
        responses.TransitionResult,
        errors={
            404: "not registered",
            409: "the lifecycle refused it; `rule` says why (recorded)",
            **BODY,
            **COMMON,
        },
        body=bodies.TransitionRequest,
        path_params=_ID,
    ),
    Operation(
        "POST",
        "/v1/silences",
        Area.API,
        "Silence the alerts of matching workloads until a time (they stay tracked and shown)",
        Auth.API_TOKEN,
        201,
        responses.Silence,
        errors={**BODY, **COMMON},
        body=bodies.SilenceRequest,
    ),
    Operation(
        "GET",
        "/v1/silences",
        Area.API,
        "Silences, latest end first (?active=true: only those in force)",
        Auth.API_TOKEN,
        200,
        responses.SilencePage,
        errors={**QUERY, **COMMON},
        query=queries.SilenceQuery,
    ),
    Operation(
        "DELETE",
        "/v1/silences/{id}",
        Area.API,
        "End a silence now",
        Auth.API_TOKEN,
        200,
        responses.Deleted,
        errors={404: "no such silence", **COMMON},
        path_params={"id": PathParam.TEXT},
    ),
    Operation(
        "POST",
        "/v1/maintenances",
        Area.API,
        "Plan a maintenance window, one-off or recurring (cron in an IANA time zone): matching "
        "workloads raise no alert and are not judged stale inside it",
        Auth.API_TOKEN,
        201,
        responses.Maintenance,
        errors={**BODY, **COMMON},
        body=bodies.MaintenanceRequest,
    ),
    Operation(
        "GET",
        "/v1/maintenances",
        Area.API,
        "Maintenance windows, newest first",
        Auth.API_TOKEN,
        200,
        responses.MaintenancePage,
        errors=COMMON,
    ),
    Operation(
        "GET",
        "/v1/maintenances/{id}",
        Area.API,
        "One maintenance window",
        Auth.API_TOKEN,
        200,
        responses.Maintenance,
        errors={404: "no such maintenance window", **COMMON},
        path_params={"id": PathParam.TEXT},
    ),
    Operation(
        "DELETE",
        "/v1/maintenances/{id}",
        Area.API,
        "Delete a maintenance window (an occurrence in force ends now)",
        Auth.API_TOKEN,
        200,
        responses.Deleted,
        errors={404: "no such maintenance window", **COMMON},
        path_params={"id": PathParam.TEXT},
    ),
    Operation(
        "POST",
        "/v1/keys",
        Area.API,
        "Create an API key (admin); the answer holds the key, the only time it is shown",
        Auth.API_TOKEN,
        201,
        access.KeyCreated,
        errors={**BODY, **COMMON},
        body=access.KeyRequest,
        scope=Scope.ADMIN,
    ),
    Operation(
        "GET",
        "/v1/keys",
        Area.API,
        "Every API key, revoked and expired ones too, never a secret (admin)",
        Auth.API_TOKEN,
        200,
        access.KeyPage,
        errors=COMMON,
        scope=Scope.ADMIN,
    ),
    Operation(
        "DELETE",
        "/v1/keys/{id}",
        Area.API,
        "Revoke an API key (admin): refused in every process within STATUSD_KEY_CACHE_TTL",
        Auth.API_TOKEN,
        200,
        access.KeyPublic,
        errors={404: "no such key", **COMMON},
        path_params={"id": PathParam.TEXT},
        scope=Scope.ADMIN,
    ),
    Operation(
        "GET",
        "/v1/audit",
        Area.API,
        "The audit trail, oldest first: one row per mutating call or sign-in attempt (admin)",
        Auth.API_TOKEN,
        200,
        access.AuditPage,
        errors={**QUERY, **COMMON},
        query=access.AuditQuery,
        scope=Scope.ADMIN,
    ),
    Operation(
        "POST",
        "/v1/prune",
        Area.API,
        "Delete what is out of retention policy (STATUSD_RETAIN_*) in bounded batches, after"
        " writing the availability rollup of the history it deletes; `dry_run` only counts",
        Auth.API_TOKEN,
        200,
        responses.PruneResult,
        errors={**BODY, **COMMON},
        body=bodies.PruneRequest,
        scope=Scope.ADMIN,
    ),
    Operation(
        "POST",
        "/v1/heartbeats",
        Area.INGEST,
        "A container's heartbeat (202 once stored in the Redis stream)",
        Auth.HEARTBEAT_TOKEN,
        202,
        responses.Accepted,
        errors={403: "token is for another workload", **BODY, **COMMON},
        body=bodies.Heartbeat,
    ),
    Operation(
        "POST",
        "/v1/heartbeats:batch",
        Area.INGEST,
        "Many heartbeats at once (at most STATUSD_MAX_BATCH_ITEMS), one result per item",
        Auth.PUBLIC,
        200,
        batch_results.BatchResult,
        errors={
            **BODY,
            503: "Redis did not confirm the append: the items marked 503 were not stored; "
            "retry them after Retry-After seconds",
        },
        error_bodies={503: batch_results.BatchResult},
        body=bodies.HeartbeatBatch,
    ),
    Operation(
        "GET",
        "/v1/reports/stale",
        Area.ONCALL,
        "Stale, UNREACHABLE and LOST workloads, worst first (JSON, or text/csv with ?format=csv)",
        Auth.API_TOKEN,
        200,
        reports.StaleReport,
        errors={**QUERY, **COMMON},
        query=queries.StaleQuery,
        alternate_media="text/csv",
    ),
    Operation(
        "GET",
        "/v1/events",
        Area.ONCALL,
        "Server-Sent Events of committed transitions (resume with Last-Event-ID)",
        Auth.API_TOKEN,
        200,
        "one `transition` event per committed transition",
        errors={400: "bad query parameter or Last-Event-ID", **COMMON},
        query=queries.StreamQuery,
        media="text/event-stream",
    ),
    Operation(
        "GET",
        "/metrics",
        Area.ONCALL,
        "Prometheus metrics of this process and the fleet-wide figures; here only while "
        "STATUSD_METRICS_PORT is unset (Bearer STATUSD_METRICS_TOKEN when that is set)",
        Auth.PUBLIC,
        200,
        "Prometheus text format",
        media="text/plain",
        errors={401: "STATUSD_METRICS_TOKEN is set and was not sent"},
    ),
    Operation(
        "GET",
        "/",
        Area.ONCALL,
        "Status page for humans",
        Auth.PUBLIC,
        200,
        "HTML",
        media="text/html",
    ),
    Operation(
        "GET",
        "/v1/reports/summary",
        Area.ONCALL,
        "Counts per kind x state, stale counts, sync backlog, stream lag (API token or page cookie)",
        Auth.API_TOKEN,
        200,
        reports.Summary,
        errors=COMMON,
    ),
    Operation(
        "GET",
        "/v1/reports/transitions",
        Area.ONCALL,
        "Newest transitions first; `last_id` is where /v1/events resumes (API token or page cookie)",
        Auth.API_TOKEN,
        200,
        reports.RecentTransitions,
        errors={**QUERY, **COMMON},
        query=queries.RecentQuery,
    ),
    Operation(
        "GET",
        "/v1/reports/workloads/{id}",
        Area.ONCALL,
        "One workload's story: workload, timeline bands, transitions, refused observations,"
        " polls, sync (API token or page cookie)",
        Auth.API_TOKEN,
        200,
        story.WorkloadStory,
        errors={404: "not registered", **COMMON},
        path_params=_ID,
    ),
    Operation(
        "GET",
        "/v1/reports/history",
        Area.ONCALL,
        "Counts by state at each step of a recent window, rebuilt from the transition history"
        " (API token or page cookie)",
        Auth.API_TOKEN,
        200,
        reports.FleetHistory,
        errors={**QUERY, **COMMON},
        query=queries.FleetHistoryQuery,
    ),
    Operation(
        "GET",
        "/v1/reports/availability",
        Area.ONCALL,
        "Seconds per state group and availability = up / (up + down) per workload and group,"
        " from transition times, time statusd could not hear left out (JSON, or text/csv with"
        " ?format=csv; API token or page cookie)",
        Auth.API_TOKEN,
        200,
        reports.AvailabilityReport,
        errors={**QUERY, **COMMON},
        query=queries.AvailabilityQuery,
        alternate_media="text/csv",
    ),
    Operation(
        "GET",
        "/v1/reports/selfwatch",
        Area.ONCALL,
        "statusd's own health for the page's banners: disruption mode, sweeper stalled"
        " (API token or page cookie)",
        Auth.API_TOKEN,
        200,
        reports.SelfWatch,
        errors=COMMON,
    ),
    Operation(
        "GET",
        "/workloads",
        Area.ONCALL,
        "Status page: the fleet list (HTML; signed-in cookie, else redirect to /)",
        Auth.PUBLIC,
        200,
        "HTML",
        media="text/html",
        other={303: "not signed in"},
        other_media={303: "text/plain"},
    ),
    Operation(
        "GET",
        "/workloads/{id}",
        Area.ONCALL,
        "Status page: one workload (HTML; signed-in cookie, else redirect to /)",
        Auth.PUBLIC,
        200,
        "HTML",
        media="text/html",
        other={303: "not signed in", 404: "HTML: no such workload"},
        other_media={303: "text/plain", 404: "text/html"},
        path_params=_ID,
    ),
    Operation(
        "POST",
        "/login",
        Area.ONCALL,
        "Status page sign-in: form field `token` (an API key or STATUSD_API_TOKEN) opens a server-side session "
        "and sets the HttpOnly, SameSite=Strict statusd_session cookie (a signed session id)",
        Auth.PUBLIC,
        303,
        "signed in, redirect to /",
        errors={400: "the form body cannot be parsed", **UNAVAILABLE},
        form=bodies.LoginForm,
        media="text/plain",
        other={401: "HTML form with an error"},
        other_media={401: "text/html"},
    ),
    Operation(
        "POST",
        "/logout",
        Area.ONCALL,
        "Status page sign-out: revokes the session server-side",
        Auth.PUBLIC,
        303,
        "redirect to /",
        media="text/plain",
    ),
    Operation(
        "GET",
        "/static/{name}",
        Area.ONCALL,
        "Status page assets (app.js, style.css, ui.js, fleet.js, workload.js, overview.js,"
        " workloads.css)",
        Auth.PUBLIC,
        200,
        "JavaScript or CSS",
        errors={404: "no such asset"},
        media="text/plain",
        path_params={"name": PathParam.TEXT},
    ),
)
