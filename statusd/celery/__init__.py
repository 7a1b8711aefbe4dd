"""The Celery glue: everything that ties statusd's areas to Celery, in one package.

- `names`: queue and task names (a leaf: producers, routes and tasks agree on them).
- `budgets`: the pull path's time limits and lease TTLs, derived from the settings.
- `application`: builds the Celery app (broker, queues, routes, beat schedule).
- `broker_transport`: the Redis broker transport, hardened against a broker restart.
- `worker_runtime`: one event loop and one Runtime per worker process; the task bodies run there.
- `sync_slots`: how many prefork slots sync drains may hold when a worker also serves the sweeper.
- `beat_leader`: only the beat holding the Redis leader lock sends.
- `drain_kick`: the runtime's drain-kick hook: publishes an outbox drain task.
- `sweeper_tasks`, `sync_tasks`: the Celery entry points, thin wrappers around the areas' code.

Only the entry points import the areas; the rest sits below them (the import-linter contracts in
pyproject.toml say where), so an area reaches Celery through the hooks it is handed, never by
importing a task.
"""
