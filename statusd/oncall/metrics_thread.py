"""/metrics for a process without an event loop: the Celery worker's main process.

The prefork children run the tasks and write their samples to the group's multiprocess
directory; the main process serves them all from a small threaded WSGI server (prometheus_client's
own WSGI app behind the STATUSD_METRICS_TOKEN check). No fleet figures here: those are the API
process kind's (statusd.oncall.fleet_collector).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from pydantic import SecretStr

from statusd.oncall import multiproc_samples
from statusd.oncall.metrics_access import METRICS_PATH, token_ok

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
REFUSED = (
    b'{"error": "unauthorized", "message": '
    b'"/metrics needs `Authorization: Bearer <STATUSD_METRICS_TOKEN>`"}'
)
NOT_FOUND = b'{"error": "not_found", "message": "only /metrics is served on this port"}'


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds the worker's shutdown
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """One line per scrape on stderr would drown the worker's own log."""


def guarded_app(token: SecretStr | None) -> WSGIApp:
    """prometheus_client's WSGI app for this process group, behind the token check."""
    inner: WSGIApp = make_wsgi_app(multiproc_samples.exposition_registry())

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [NOT_FOUND]
        if not token_ok(environ.get("HTTP_AUTHORIZATION"), token):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "application/json"),
                    ("WWW-Authenticate", 'Bearer realm="statusd-metrics"'),
                ],
            )
            return [REFUSED]
        return inner(environ, start_response)

    return app


class MetricsThread:
    """A metrics listener on its own daemon thread; `stop()` closes the socket."""

    def __init__(self, host: str, port: int, token: SecretStr | None) -> None:
        self.server = make_server(
            host, port, guarded_app(token), server_class=_Server, handler_class=_QuietHandler
        )
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="statusd-metrics", daemon=True
        )

    def start(self) -> MetricsThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
