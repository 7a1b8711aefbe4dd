"""The status-page cookie is a signed, expiring, revocable session id: never the API token itself."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from statusd.api import sessions
from statusd.api.auth import COOKIE_NAME
from statusd.keys import Keys
from statusd.settings import Settings
from tests.conftest import TEST_API_TOKEN, TEST_SECRET
from tests.support.api_client import api_client, in_process_app

ANONYMOUS = {"Authorization": ""}
PROTECTED = ("/v1/reports/summary", "/v1/reports/stale", "/v1/reports/transitions")


async def login(client: TestClient[Any, Any], **headers: str) -> tuple[str, SimpleCookie]:
    """POST /login with the token; returns the cookie value and the parsed Set-Cookie."""
    resp = await client.post(
        "/login",
        data={"token": TEST_API_TOKEN},
        headers={**ANONYMOUS, **headers},
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie"):
        jar.load(header)
    client.session.cookie_jar.clear()  # every request below carries only what it is given
    return jar[COOKIE_NAME].value, jar


async def status_with(client: TestClient[Any, Any], path: str, cookie: str) -> int:
    return (
        await client.get(path, headers={**ANONYMOUS, "Cookie": f"{COOKIE_NAME}={cookie}"})
    ).status


async def test_the_cookie_is_a_signed_session_and_never_the_token(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings()
    async with api_client(settings) as client:
        value, jar = await login(client)
        assert TEST_API_TOKEN not in value
        morsel = jar[COOKIE_NAME]
        assert morsel["httponly"] and morsel["samesite"] == "Strict" and not morsel["secure"]
        assert int(morsel["max-age"]) == int(settings.session_ttl)
        cookie = sessions.decode(settings.verifying_secrets, value, time.time())
        assert cookie is not None  # signed with STATUSD_SECRET, expiry in the signed value
        assert time.time() < cookie.expires_at <= time.time() + settings.session_ttl + 1
        key = Keys(settings.redis_prefix).session(cookie.session_id)
        assert 0 < await redis.ttl(key) <= settings.session_ttl  # server-side, expiring
        for path in PROTECTED:
            assert await status_with(client, path, value) == 200, path
            assert await status_with(client, path, TEST_API_TOKEN) == 401, path  # the old cookie


async def test_a_stolen_cookie_stops_working_after_logout(
    make_settings: Callable[..., Settings],
) -> None:
    async with api_client(make_settings()) as client:
        mine, _ = await login(client)
        stolen = mine  # an attacker's copy
        assert await status_with(client, "/v1/reports/summary", stolen) == 200
        out = await client.post(
            "/logout",
            headers={**ANONYMOUS, "Cookie": f"{COOKIE_NAME}={mine}"},
            allow_redirects=False,
        )
        assert out.status == 303
        assert (
            f'{COOKIE_NAME}=""' in out.headers["Set-Cookie"]
            or "Max-Age=0" in out.headers["Set-Cookie"]
        )
        for path in PROTECTED:
            assert await status_with(client, path, stolen) == 401, path
        page = await client.get("/", headers={**ANONYMOUS, "Cookie": f"{COOKIE_NAME}={stolen}"})
        assert 'id="login-form"' in await page.text()
        again, _ = await login(client)  # signing in again opens a new, working session
        assert again != stolen and await status_with(client, "/v1/reports/summary", again) == 200


def forged(settings: Settings, session_id: str, expires_at: int, secret: str = TEST_SECRET) -> str:
    return sessions.encode(secret.encode(), sessions.SessionCookie(session_id, expires_at))


async def test_tampered_expired_or_foreign_cookies_are_refused(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    async with api_client(settings) as client:
        value, _ = await login(client)
        cookie = sessions.decode(settings.verifying_secrets, value, time.time())
        assert cookie is not None
        sid, expires = cookie.session_id, cookie.expires_at
        refused = {
            "later expiry, old signature": value.replace(f".{expires}.", f".{expires + 3600}."),
            "expired, validly signed": forged(settings, sid, int(time.time()) - 1),
            "signed with another secret": forged(settings, sid, expires, secret="another-" * 5),
            "unknown session, valid signature": forged(settings, "x" * 43, expires),
            "garbage": "s1.a.b.c",
            "not ascii": "s1.\u00e9.1.x",
        }
        for case, bad in refused.items():
            assert await status_with(client, "/v1/reports/summary", bad) == 401, case
        assert await status_with(client, "/v1/reports/summary", value) == 200


@pytest.mark.parametrize(
    "trusted,forwarded,secure",
    [
        ([], "https", False),  # default: nobody's X-Forwarded-Proto is believed
        (["127.0.0.1/32"], "https", True),
        (["127.0.0.1/32"], "http", False),
        (["127.0.0.1/32"], "https, http", False),  # the trusted proxy's own view is the last one
        (["127.0.0.1/32"], "http, https", True),
        (["10.0.0.0/8"], "https", False),  # the header came from a peer that is not the proxy
    ],
)
async def test_secure_flag_follows_https_through_a_trusted_proxy(
    make_settings: Callable[..., Settings], trusted: list[str], forwarded: str, secure: bool
) -> None:
    async with api_client(make_settings(trusted_proxies=trusted)) as client:
        _, jar = await login(client, **{"X-Forwarded-Proto": forwarded})
        assert bool(jar[COOKIE_NAME]["secure"]) is secure


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts around a throwaway certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


async def test_secure_flag_on_a_direct_tls_connection(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    server_tls, client_tls = self_signed(tmp_path)
    server = TestServer(in_process_app(make_settings()), host="127.0.0.1", scheme="https")
    await server.start_server(ssl=server_tls)
    try:
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                server.make_url("/login"),
                data={"token": TEST_API_TOKEN},
                ssl=client_tls,
                allow_redirects=False,
            )
            assert resp.status == 303, await resp.text()
            assert resp.cookies[COOKIE_NAME]["secure"]
            resp.release()
    finally:
        await server.close()
