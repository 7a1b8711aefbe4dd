"""Typed keys for what the aiohttp app holds (aiohttp web.AppKey)."""

from __future__ import annotations

from aiohttp import web

from statusd.runtime import Runtime
from statusd.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
