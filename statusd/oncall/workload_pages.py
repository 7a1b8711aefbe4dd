"""The status page's workload views (HTML shells; their scripts read the JSON with the cookie):

- GET /workloads: the fleet list (filters by kind, state, label, stale; search by id prefix);
- GET /workloads/{id}: one workload's page, or a 404 page when the id was never registered.

Not signed in: a redirect to / (the sign-in form). The shells are static files from statusd/web;
no data is templated into them, so nothing a workload reports can inject markup.
"""

from __future__ import annotations

import html
from importlib import resources
from urllib.parse import quote

from aiohttp import web

from statusd.api.auth import api_token_ok
from statusd.api.request_checks import path_workload_id
from statusd.app_keys import RUNTIME
from statusd.errors import UnknownWorkload
from statusd.oncall.page import SECURITY_HEADERS
from statusd.oncall.workload_story import workload_known


def _signed_in(request: web.Request) -> bool:
    """The one place these pages check the sign-in (API token or the page's cookie)."""
    return api_token_ok(request, allow_cookie=True)


def _shell(name: str) -> web.Response:
    text = resources.files("statusd").joinpath("web", name).read_text(encoding="utf-8")
    return web.Response(text=text, content_type="text/html", headers=SECURITY_HEADERS)


def not_found_page(workload_id: str) -> str:
    shown = html.escape(workload_id)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>statusd: no workload {shown}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/style.css">
<link rel="stylesheet" href="/static/workloads.css"></head>
<body><header><h1><a href="/">statusd</a></h1></header>
<main><section id="not-found"><h2>No workload {shown}</h2>
<p>No workload with this id was ever registered.</p>
<p><a href="/workloads?id_prefix={html.escape(quote(workload_id[:40], safe=""))}">Search the fleet</a>
 · <a href="/">back to the overview</a></p></section></main></body></html>"""


async def fleet_page(request: web.Request) -> web.Response:
    """GET /workloads: the fleet list."""
    if not _signed_in(request):
        raise web.HTTPSeeOther("/")
    return _shell("fleet.html")


async def workload_page(request: web.Request) -> web.Response:
    """GET /workloads/{id}: the workload's page (deregistered ones too: their history is kept),
    or 404 (HTML) when the id was never registered."""
    if not _signed_in(request):
        raise web.HTTPSeeOther("/")
    workload_id = request.match_info["id"]
    try:
        known = await workload_known(request.app[RUNTIME], path_workload_id(request))
    except UnknownWorkload:
        known = False
    if not known:
        return web.Response(
            text=not_found_page(workload_id),
            status=404,
            content_type="text/html",
            headers=SECURITY_HEADERS,
        )
    return _shell("workload.html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/workloads", fleet_page, allow_head=False)
    app.router.add_get("/workloads/{id}", workload_page, allow_head=False)
