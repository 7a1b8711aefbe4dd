"""Heartbeat push path: the ingest endpoint (hot path), its Redis streams and their consumers.

`mount.setup_ingest` puts the routes and consumers on a `serve` app. The package itself imports
nothing: a worker needs only `streams` (replaying a stream after a Redis loss), not the web side.
"""
