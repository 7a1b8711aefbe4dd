"""GET / : the status page for humans (static HTML/JS/CSS from statusd/web, no build step).

Login: GET / without a valid session cookie shows a form; POST /login (statusd.oncall.login)
trades the API token for a session and redirects to /. The page's JavaScript then reads the JSON
endpoints and /v1/events with that cookie (neither it nor the token is visible to scripts).
"""

from __future__ import annotations

import html
from importlib import resources

from aiohttp import web

from statusd.api.auth import api_token_ok

ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
# The workload views (statusd.oncall.workload_pages): fleet list, workload page, overview extras.
ASSETS |= {n: "text/javascript" for n in ("ui.js", "fleet.js", "workload.js", "overview.js")}
ASSETS["workloads.css"] = "text/css"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _asset(name: str) -> str:
    return resources.files("statusd").joinpath("web", name).read_text(encoding="utf-8")


def login_form(error: str | None = None) -> str:
    message = f'<p class="error" id="login-error">{html.escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>statusd: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/style.css"></head>
<body class="login"><main><h1>statusd</h1>
<form method="post" action="/login" id="login-form">
<label for="token">API token</label>
<input type="password" name="token" id="token" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>{message}
</form></main></body></html>"""


async def index(request: web.Request) -> web.Response:
    """GET /: the page, or the login form (200) when the cookie is missing or wrong."""
    if api_token_ok(request, allow_cookie=True):
        return web.Response(
            text=_asset("index.html"), content_type="text/html", headers=SECURITY_HEADERS
        )
    return web.Response(text=login_form(), content_type="text/html", headers=SECURITY_HEADERS)


async def asset(request: web.Request) -> web.Response:
    """GET /static/{name}: the page's script and stylesheet (public: they hold no data)."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound(text=f"no asset {name!r}")
    return web.Response(
        text=_asset(name), content_type=ASSETS[name], headers={"Cache-Control": "no-cache"}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index, allow_head=False)
    app.router.add_get("/static/{name}", asset, allow_head=False)
