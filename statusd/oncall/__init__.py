"""On-call: stale reports, live events (SSE), metrics, the status page.

The routes are registered by `statusd.oncall.endpoints.setup_oncall`. This package module imports
nothing: the worker and the CLI import single on-call modules (events, multiproc, reports), and
each would otherwise pay for the whole web side (login, pages, the API it links to).
"""
