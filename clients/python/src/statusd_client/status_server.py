"""`serve_status`: the pull-fallback status endpoint statusd polls when heartbeats stop.

    server = serve_status(lambda: state["status"], port=8000)   # status_url: http://<pod-ip>:8000/status
    ...
    server.close()

Answers every GET with 200 `{"status": <get_status()>, "seq": <next seq>}`, the shape statusd's
poller requires (README, "the status endpoint"). The seq comes from the same clock as the
heartbeats, so a poll answer and a heartbeat compare correctly. If `get_status` raises or returns
None the answer is 503: statusd counts that as a failed poll rather than applying a guess.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Callable, Optional

from statusd_client.seq import next_seq

log = logging.getLogger("statusd_client")

GetStatus = Callable[[], Optional[str]]


class StatusServer:
    """A running status endpoint (daemon thread). `close()` stops it and frees the port."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """A loopback URL of the endpoint (register the pod's address instead in production)."""
        return f"http://127.0.0.1:{self.port}/status"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> StatusServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve_status(get_status: GetStatus, *, port: int = 8000, host: str = "0.0.0.0") -> StatusServer:
    """Serve the status endpoint on host:port in a daemon thread; returns a closable handle.

    `get_status` is called on every poll and returns the workload's state now (e.g. a
    Heartbeater's `status` property: `serve_status(lambda: hb.status)`).
    """

    class Handler(BaseHTTPRequestHandler):
        server_version = "statusd-client"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            try:
                status = get_status()
            except Exception as exc:  # the workload's callback: its bug, reported as "unknown"
                log.exception("statusd_client: get_status failed")
                self._answer(503, {"error": "status_unavailable", "message": str(exc)[:200]})
                return
            if status is None:
                self._answer(503, {"error": "status_unknown", "message": "no state yet"})
                return
            self._answer(200, {"status": str(status), "seq": next_seq()})

        def _answer(self, code: int, doc: dict[str, object]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("statusd_client: status endpoint: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="statusd-status", daemon=True)
    thread.start()
    return StatusServer(server, thread)
