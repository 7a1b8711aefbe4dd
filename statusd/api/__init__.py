"""Status API for the platform backend (workloads, transitions, health, OpenAPI).

The routes and middlewares are registered by `statusd.api.routes.setup_api`. This package module
imports nothing: the on-call side, the worker's /metrics listener and the CLI use single API
modules (auth, error responses, serializers), and each would otherwise pay for every route
(the OpenAPI document and the schemas of all of them).
"""
