"""Where /metrics is and who may read it: shared by the API's endpoint
(statusd.oncall.metrics_endpoint) and the worker's listener (statusd.oncall.metrics_thread),
which needs nothing else of the former (its aiohttp side, the fleet figures)."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

METRICS_PATH = "/metrics"


def token_ok(authorization: str | None, token: SecretStr | None) -> bool:
    """True when no token is configured, or the header carries it (constant-time compare)."""
    if token is None or not token.get_secret_value():
        return True
    scheme, _, given = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)
