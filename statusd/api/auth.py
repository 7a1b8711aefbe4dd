"""Who may call, and what: API keys (scope + labels), the bootstrap token, the page's session.

Every protected handler is declared with `guard(scope, action=...)`. The guard resolves the
request's principal (Bearer: STATUSD_API_TOKEN, the bootstrap admin key, or an API key looked up
through the process's short-lived KeyCache; or the status page's session cookie where the route
accepts it), answers 401 without one, 403 naming the scope needed when the key's scope is too
small, and 404 for a workload outside the key's labels (no existence leak). The declaration is
also what the audit middleware (statusd.api.audit_trail) reads: a mutating route is audited by
declaring its action, with no audit code in the handler.

The cookie holds a signed session id (statusd.api.sessions), never a key. `session_middleware`
resolves it once per request (signature and expiry without I/O, then one Redis GET for the key
it acts for), and costs nothing on requests that carry no cookie (heartbeats).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from redis.exceptions import RedisError
from sqlalchemy import select

from statusd.access import api_keys
from statusd.access.audit import AuditAction
from statusd.access.key_cache import KeyCache
from statusd.access.scopes import BOOTSTRAP, BOOTSTRAP_ID, Principal, Scope
from statusd.api import sessions
from statusd.api.error_responses import error_response
from statusd.app_keys import RUNTIME, SETTINGS
from statusd.db import reading
from statusd.errors import BadInput, UnknownWorkload
from statusd.schema.rules import WORKLOAD_ID_RE
from statusd.tables import WORKLOADS

log = structlog.get_logger("statusd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COOKIE_NAME = "statusd_session"  # HttpOnly, SameSite=Strict; holds a signed session id
LEGACY_COOKIE_NAME = "statusd_token"  # held the raw API token before sessions: never read again
SESSION = web.RequestKey("statusd_session", sessions.SessionCookie)  # set only when valid
SESSION_PRINCIPAL = web.RequestKey("statusd_session_principal", Principal)
PRINCIPAL = web.RequestKey("statusd_principal", Principal)  # who this request acts as
AUDIT_TARGET = web.RequestKey("statusd_audit_target", str)  # set by handlers whose path lacks it
KEY_CACHE = web.AppKey("statusd_key_cache", KeyCache)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ACCESS_ATTR = "__statusd_access__"


@dataclass(frozen=True, slots=True)
class Access:
    """What a route needs, declared once on its handler."""

    scope: Scope | None  # None: by method (GET read, anything else write)
    action: AuditAction | None = None  # audited under this name (mutating methods)
    cookie: bool = False  # the status page's session cookie is accepted too
    workload_path: bool = False  # `{id}` names a workload: outside the key's labels is a 404
    fleet_wide: bool = False  # answers about every workload: keys with labels are refused
    authenticated: bool = True  # False: audited only (sign-in itself)

    def needed(self, method: str) -> Scope:
        if self.scope is not None:
            return self.scope
        return Scope.READ if method in READ_METHODS else Scope.WRITE


def access_of(handler: object) -> Access | None:
    """The Access a handler was declared with (None: a public or heartbeat route)."""
    found = getattr(handler, _ACCESS_ATTR, None)
    return found if isinstance(found, Access) else None


async def key_cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """The process's KeyCache (after the runtime: it reads through the runtime's engine)."""
    app[KEY_CACHE] = KeyCache(app[RUNTIME].engine, app[SETTINGS].key_cache_ttl)
    yield


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def token_matches(request: web.Request, presented: str) -> bool:
    """Constant-time comparison with STATUSD_API_TOKEN (False when none is configured)."""
    token = request.app[SETTINGS].api_token
    return token is not None and hmac.compare_digest(
        presented.encode(), token.get_secret_value().encode()
    )


async def principal_for_key(request: web.Request, presented: str) -> Principal | None:
    """The principal `presented` proves: the bootstrap token, or a live (unrevoked, unexpired) key."""
    if token_matches(request, presented):
        return BOOTSTRAP
    key_id = api_keys.key_id_of(presented)
    if key_id is None:
        return None
    record = await request.app[KEY_CACHE].get(key_id)
    if record is None or not api_keys.matches(record, presented):
        return None
    return record.principal() if record.usable(datetime.now(UTC)) else None


async def principal_for_id(request: web.Request, key_id: str) -> Principal | None:
    """The principal a session acts for (its key id), while that key is still usable."""
    if key_id == BOOTSTRAP_ID or key_id.isdigit():  # digits: a session from before keys
        return BOOTSTRAP if request.app[SETTINGS].api_token is not None else None
    record = await request.app[KEY_CACHE].get(key_id)
    if record is None or not record.usable(datetime.now(UTC)):
        return None
    return record.principal()


async def _open_session(request: web.Request, raw: str) -> Principal | None:
    rt = request.app[RUNTIME]
    cookie = sessions.decode(rt.settings.verifying_secrets, raw, time.time())
    if cookie is None:
        return None
    try:
        key_id = await sessions.session_key(rt.redis, rt.keys, cookie.session_id)
    except RedisError as exc:
        # Fail closed, and only for the cookie: bearer-token and public routes keep working.
        log.warning("session.check_failed", error=f"{type(exc).__name__}: {exc}")
        return None
    if key_id is None:
        return None
    principal = await principal_for_id(request, key_id)
    if principal is not None:
        request[SESSION] = cookie
    return principal


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the request's session when its cookie is valid, not revoked, and its key usable."""
    raw = request.cookies.get(COOKIE_NAME) if "Cookie" in request.headers else None
    if raw:
        principal = await _open_session(request, raw)
        if principal is not None:
            request[SESSION_PRINCIPAL] = principal
    return await handler(request)


def api_token_ok(request: web.Request, *, allow_cookie: bool = False) -> bool:
    """The bootstrap token as Bearer, or (allow_cookie) a live status-page session (HTML pages)."""
    presented = bearer(request)
    if presented is not None and token_matches(request, presented):
        return True
    return allow_cookie and SESSION_PRINCIPAL in request


async def identify(request: web.Request, *, allow_cookie: bool) -> Principal | None:
    """The request's principal: its Bearer key, else (allow_cookie) its session's key."""
    presented = bearer(request)
    if presented is not None:
        return await principal_for_key(request, presented)
    if allow_cookie:
        return request.get(SESSION_PRINCIPAL)
    return None


def forbidden(needed: Scope, message: str) -> web.Response:
    return error_response(403, "forbidden", message, needed_scope=needed.value)


async def _workload_labels(request: web.Request, workload_id: str) -> Mapping[str, str] | None:
    engine = request.app[RUNTIME].engine
    async with reading(engine) as conn:
        row = (
            await conn.execute(select(WORKLOADS.c.labels).where(WORKLOADS.c.id == workload_id))
        ).first()
    return None if row is None else dict(row.labels or {})


async def _check(request: web.Request, access: Access) -> web.Response | None:
    """None when the request may proceed; else the refusal to answer."""
    principal = await identify(request, allow_cookie=access.cookie)
    if principal is None:
        return error_response(
            401,
            "unauthorized",
            "missing, wrong, revoked or expired API key: send Authorization: Bearer <key>",
        )
    request[PRINCIPAL] = principal
    needed = access.needed(request.method)
    if not principal.scope.covers(needed):
        return forbidden(
            needed,
            f"this call needs a key with scope {needed.value!r}; key {principal.name!r} has "
            f"{principal.scope.value!r}",
        )
    if principal.labels and access.fleet_wide:
        return forbidden(
            needed,
            f"this call spans every workload: it needs a {needed.value!r} key without labels",
        )
    if principal.labels and access.workload_path:
        workload_id = request.match_info.get("id", "")
        # A malformed id is left to the handler's own check (a 4xx naming it); never queried.
        valid = WORKLOAD_ID_RE.fullmatch(workload_id) is not None
        labels = await _workload_labels(request, workload_id) if valid else None
        if labels is not None and not principal.sees(labels):
            raise UnknownWorkload(f"workload {workload_id[:200]!r} is not registered")
    return None


def guard(
    scope: Scope | None = None,
    *,
    action: AuditAction | None = None,
    cookie: bool = False,
    workload_path: bool = False,
    fleet_wide: bool = False,
) -> Callable[[Handler], Handler]:
    """Declare what a handler needs (see Access); the wrapper enforces it."""
    access = Access(scope, action, cookie, workload_path, fleet_wide)

    def decorate(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            refused = await _check(request, access)
            if refused is not None:
                return refused
            return await handler(request)

        return _declared(checked, handler, access)

    return decorate


def audited(action: AuditAction) -> Callable[[Handler], Handler]:
    """Declare an unauthenticated mutating route (sign-in) as audited; it checks its own input."""
    access = Access(None, action, authenticated=False)

    def decorate(handler: Handler) -> Handler:
        return _declared(handler, handler, access)

    return decorate


def _declared(wrapper: Any, handler: Handler, access: Access) -> Handler:
    if wrapper is not handler:
        wrapper.__name__ = handler.__name__
        wrapper.__doc__ = handler.__doc__
    setattr(wrapper, _ACCESS_ATTR, access)
    return wrapper  # type: ignore[no-any-return]


# Declared by method: GET needs `read`, anything else `write` (and mutating calls are audited).
require_api_token = guard()
require_api_token_or_cookie = guard(cookie=True)


def principal_of(request: web.Request) -> Principal:
    """The principal a guarded handler runs as."""
    return request[PRINCIPAL]


def require_labels(
    request: web.Request,
    workload_id: str,
    labels: Mapping[str, str] | None,
    *,
    field: str = "labels",
) -> None:
    """Registering under a key with labels: the workload must carry all of them (422 naming
    `field` otherwise). Also names the workload as the call's audit target."""
    request[AUDIT_TARGET] = workload_id
    check_labels(request, labels, field=field)


def check_labels(
    request: web.Request, labels: Mapping[str, str] | None, *, field: str = "labels"
) -> None:
    """The labels a registration carries include all of the request's key's (422 naming `field`
    otherwise): the rule of `require_labels`, for each item of a batch."""
    missing = principal_of(request).missing_label(labels)
    if missing is not None:
        raise BadInput(
            f"this key registers only workloads labelled {missing}: add it to {field}",
            field=field,
            status=422,
            error="missing_label",
        )


def key_labels(request: web.Request) -> dict[str, str]:
    """The labels the request's key is limited to ({} for an unlimited key)."""
    return dict(principal_of(request).labels)
