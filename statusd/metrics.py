"""Prometheus metrics of one statusd process, defined once. Areas import and update them.

The Prometheus way: each process exposes its own metrics and Prometheus sums them.
- `serve --workers N` and the prefork Celery workers share prometheus_client's multiprocess
  directory (statusd.oncall.multiproc): one scrape of the process group covers all of it. So a
  gauge here needs an explicit `multiprocess_mode` saying how the group's values combine.
- Fleet-wide figures (stream lag, outbox, Celery queues, workloads by state, the sweeper's and
  disruption signals) are not here: the API process computes them from Redis and the database
  at scrape time (statusd.oncall.fleet_collector), so they are never stale and never doubled.

Scale-out signals for an autoscaler: `statusd_stream_lag` (consumers behind ingest: more
consumers / `serve` processes) and `statusd_celery_queue_depth{queue}` (workers behind: more
Celery workers for that queue).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# -- push path --
HEARTBEATS_ACCEPTED = Counter(
    "statusd_heartbeats_accepted_total", "Heartbeats stored in the stream (202)"
)
HEARTBEATS_REJECTED = Counter(
    "statusd_heartbeats_rejected_total", "Heartbeats refused at ingest", ["reason"]
)  # reason: unauthorized|forbidden|invalid|too_large|redis_unavailable
INGEST_LATENCY = Histogram(
    "statusd_ingest_latency_seconds",
    "Ingest request latency (until the 202/4xx/503)",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
INGEST_LAST_ACCEPT = Gauge(
    "statusd_ingest_last_accept_timestamp_seconds",
    "Unix time at which this process last stored a heartbeat (202)",
    multiprocess_mode="max",
)
REDIS_WAIT_FAILURES = Counter(
    "statusd_redis_wait_failures_total",
    "Group-commit flushes answered 503 because fewer replicas than required acknowledged (WAIT)",
)
CONSUMER_APPLIED = Counter(
    "statusd_consumer_entries_total", "Stream entries handled by consumers", ["outcome"]
)
DEAD_LETTERS = Counter(
    "statusd_dead_letters_total", "Entries moved to a dead-letter stream", ["stream"]
)

# -- lifecycle --
TRANSITIONS = Counter(
    "statusd_transitions_total", "Applied transitions", ["kind", "from_state", "to_state", "source"]
)
REFUSED = Counter("statusd_refused_observations_total", "Refused observations", ["kind", "source"])

# -- pull path --
SWEEP_DURATION = Histogram(
    "statusd_sweep_duration_seconds", "Duration of one sweep (finding stale workloads)"
)
SWEEP_STALE = Gauge(
    "statusd_sweep_stale_workloads",
    "Stale workloads found by the last sweep",
    multiprocess_mode="mostrecent",  # whichever worker child swept last
)
POLLS = Counter("statusd_polls_total", "Polls of container status endpoints", ["outcome"])

# -- sync / alerts --
SYNC_SENDS = Counter("statusd_sync_sends_total", "Main-API sends", ["outcome"])
# receiver: a receiver's name, or `webhook` / `alertmanager` for the URL lists (never a URL).
ALERTS_SENT = Counter(
    "statusd_alerts_sent_total",
    "Alert deliveries per destination",
    ["event", "outcome", "receiver", "format"],
)

# -- retention --
PRUNED_ROWS = Counter(
    "statusd_pruned_rows_total", "Rows deleted by retention (statusd.retention)", ["table"]
)
