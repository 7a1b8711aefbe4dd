"""Every statusd route this client calls, and the method that calls it: the one table both the
clients and the coverage test read (tests/test_client_api_covers_every_operation.py walks the
served OpenAPI document against it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as in the OpenAPI document: `{id}` placeholders

    @property
    def idempotent(self) -> bool:
        """Safe to send again after a 503 or a lost answer. Only reads: a write that got a 503
        may have half-happened (a deregistration removed from the database, not yet from Redis),
        so repeating it is the caller's decision."""
        return self.method == "GET"


# method name -> route (StatusdApi and AsyncStatusdApi have a method of each name)
ROUTES: dict[str, Route] = {
    "register": Route("POST", "/v1/workloads"),
    "register_many": Route("POST", "/v1/workloads:batch"),
    "list": Route("GET", "/v1/workloads"),
    "get": Route("GET", "/v1/workloads/{id}"),
    "deregister": Route("DELETE", "/v1/workloads/{id}"),
    "history": Route("GET", "/v1/workloads/{id}/transitions"),
    "transition": Route("POST", "/v1/workloads/{id}/transitions"),
    "create_silence": Route("POST", "/v1/silences"),
    "silences": Route("GET", "/v1/silences"),
    "delete_silence": Route("DELETE", "/v1/silences/{id}"),
    "create_maintenance": Route("POST", "/v1/maintenances"),
    "maintenances": Route("GET", "/v1/maintenances"),
    "maintenance": Route("GET", "/v1/maintenances/{id}"),
    "delete_maintenance": Route("DELETE", "/v1/maintenances/{id}"),
    "watch": Route("GET", "/v1/events"),
    "recent_transitions": Route("GET", "/v1/reports/transitions"),
    "stale_report": Route("GET", "/v1/reports/stale"),
    "summary": Route("GET", "/v1/reports/summary"),
    "workload_story": Route("GET", "/v1/reports/workloads/{id}"),
    "fleet_history": Route("GET", "/v1/reports/history"),
    "selfwatch": Route("GET", "/v1/reports/selfwatch"),
    "create_key": Route("POST", "/v1/keys"),
    "keys": Route("GET", "/v1/keys"),
    "revoke_key": Route("DELETE", "/v1/keys/{id}"),
    "audit": Route("GET", "/v1/audit"),
    "prune": Route("POST", "/v1/prune"),
    "availability": Route("GET", "/v1/reports/availability"),
    "health": Route("GET", "/healthz"),
    "readiness": Route("GET", "/readyz"),
    "openapi": Route("GET", "/v1/openapi.json"),
}

# Routes that are not the platform backend's, and who uses them instead.
NOT_FOR_THIS_CLIENT: dict[tuple[str, str], str] = {
    ("POST", "/v1/heartbeats"): "containers: statusd_client.Heartbeater",
    ("POST", "/v1/heartbeats:batch"): "node agents reporting for many containers",
    ("GET", "/metrics"): "Prometheus",
    ("GET", "/"): "the status page (a browser)",
    ("GET", "/workloads"): "the status page (a browser)",
    ("GET", "/workloads/{id}"): "the status page (a browser)",
    ("POST", "/login"): "the status page (a browser)",
    ("POST", "/logout"): "the status page (a browser)",
    ("GET", "/static/{name}"): "the status page (a browser)",
}
