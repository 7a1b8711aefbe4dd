"""Prometheus metrics, defined once. Areas import and update them; /metrics exposes them.

Multi-process: `serve --workers N` and Celery workers are separate processes (often on other
hosts). Each process that opens a Runtime pushes its samples to Redis every
STATUSD_METRICS_PUSH_INTERVAL seconds; GET /metrics sums them into one scrape
(statusd.oncall.metrics_fleet). So: update these objects in any process, never build a registry.

Scale-out signals for an autoscaler: `statusd_stream_lag` (consumers behind ingest: more
consumers / `serve` processes) and `statusd_celery_queue_depth{queue}` (workers behind: more
Celery workers for that queue). Both are computed at scrape time from Redis.
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
STREAM_LENGTH = Gauge("statusd_stream_length", "Entries in the heartbeat stream")
STREAM_LAG = Gauge(
    "statusd_stream_lag", "Entries not yet delivered to the consumer group (scale-out signal)"
)
STREAM_PENDING = Gauge("statusd_stream_pending", "Entries delivered but not acknowledged")
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
SWEEP_STALE = Gauge("statusd_sweep_stale_workloads", "Stale workloads found by the last sweep")
POLLS = Counter("statusd_polls_total", "Polls of container status endpoints", ["outcome"])
POLL_QUEUE_DEPTH = Gauge(
    "statusd_celery_queue_depth", "Messages waiting in a Celery queue", ["queue"]
)

# -- sync / alerts --
OUTBOX_DEPTH = Gauge("statusd_outbox_depth", "Outbox rows not yet synced", ["target"])
OUTBOX_OLDEST_AGE = Gauge(
    "statusd_outbox_oldest_age_seconds", "Age of the oldest unsynced outbox row", ["target"]
)
OUTBOX_DEAD = Gauge("statusd_outbox_dead", "Outbox rows dead-lettered", ["target"])
SYNC_SENDS = Counter("statusd_sync_sends_total", "Main-API sends", ["outcome"])
ALERTS_SENT = Counter("statusd_alerts_sent_total", "Alert webhook deliveries", ["event", "outcome"])
