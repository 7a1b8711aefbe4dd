"""The one typed settings object. Every knob is a `STATUSD_` environment variable.

Build it once (CLI entry or app factory) and pass it down; nothing reads the environment elsewhere.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from statusd.errors import ConfigError
from statusd.keys import DEFAULT_STREAM_SHARDS
from statusd.receiver_config import Receiver, ReceiverFormat, parse_receivers

DEFAULT_POLL_ALLOW_NETS = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)
# Values people paste from examples; refused outside dev so production never runs on them.
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "token", "dev", "test", "xxx"}
)


class BrokerQueueType(StrEnum):
    """How the Celery queues are declared on a RabbitMQ broker."""

    CLASSIC = "classic"
    QUORUM = "quorum"  # replicated over the RabbitMQ cluster (Raft): survives a node loss


class RedisMode(StrEnum):
    """How statusd reaches its Redis (statusd.redis_runtime.create_redis builds the client)."""

    STANDALONE = "standalone"  # one server at STATUSD_REDIS_URL (the zero-config default)
    CLUSTER = "cluster"  # Redis Cluster; STATUSD_REDIS_URL names any one node
    SENTINEL = "sentinel"  # the primary named STATUSD_REDIS_SENTINEL_MASTER, found via sentinels


class LogFormat(StrEnum):
    AUTO = "auto"  # JSON when stderr is not a terminal, human-readable when it is
    JSON = "json"
    CONSOLE = "console"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """statusd configuration, read from `STATUSD_*` variables (and an optional env file)."""

    model_config = SettingsConfigDict(env_prefix="STATUSD_", extra="ignore")

    # -- foundation -----------------------------------------------------------------------------
    dev: bool = False  # `statusd up` sets it: generated secrets allowed, embedded Redis allowed
    database_url: str = "sqlite+aiosqlite:///./statusd.db"
    redis_url: str | None = None  # unset: 127.0.0.1:6379 if it answers, else an embedded Redis
    redis_prefix: str = (
        "statusd:"  # every key, stream and group starts with it (tests use their own)
    )
    redis_max_connections: int = Field(default=64, ge=4)
    redis_mode: RedisMode = RedisMode.STANDALONE
    # sentinel mode: host:port,host:port,... and the monitored master's name
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_sentinel_master: str | None = None
    # A group-commit flush answers 202 only after this many replicas acknowledged it (WAIT);
    # unset: 1 when the primary has replicas, else 0; 0: off (statusd.ingest.replica_acks).
    redis_min_replica_acks: int | None = Field(default=None, ge=0)
    api_token: SecretStr | None = None
    secret: SecretStr | None = None
    # Secrets being rotated out, comma-separated: heartbeat tokens and session cookies they signed
    # still verify (a heartbeat on one is answered with a fresh token); nothing new is signed.
    secret_previous: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    heartbeat_ttl: float = Field(default=30.0, gt=0)
    # The longest quiet period a heartbeat may announce (`quiet_for_s`); more is a 422.
    max_quiet_s: int = Field(default=3600, ge=1)
    # After ingest was down (or at a statusd start) silence counts only after this many seconds of
    # listening again; unset: the heartbeat TTL (statusd.hearing).
    startup_grace: float | None = Field(default=None, ge=0)
    # Server-paced heartbeats: the 202 tells each workload when to send the next one so that the
    # fleet's aggregate rate stays under this (statusd.hearing.paced_interval).
    max_heartbeats_per_s: float = Field(default=2000.0, gt=0)
    state_dir: Path = Path(".statusd")  # dev secrets file, embedded Redis data, pid files
    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "INFO"
    db_pool_size: int = Field(default=10, ge=1)
    # After start-up, move the heap it built out of the cyclic collector's sight (statusd.app).
    # Off only where one process builds app after app (the tests' in-process servers): each
    # start-up would first collect that whole, ever larger process.
    gc_freeze: bool = True

    # -- push path ------------------------------------------------------------------------------
    consumers: int = Field(default=2, ge=0)  # consumer tasks inside each `serve` process
    consumer_batch: int = Field(default=500, ge=1)
    consumer_block_ms: int = Field(default=1000, ge=1)
    # After a batch smaller than consumer_batch, a shard's loop waits this long before reading
    # again, so a slow shard's reports are applied a few at a time, not one round of reads,
    # scripts and acks each. Ingest records last-seen itself: only a reported state change waits.
    consumer_linger_ms: int = Field(default=500, ge=0)
    max_deliveries: int = Field(default=5, ge=1)  # then the entry goes to the dead-letter stream
    max_body_bytes: int = Field(default=16 * 1024, ge=1024)
    max_batch_items: int = Field(
        default=1000, ge=1
    )  # items per :batch request (heartbeats, registrations)
    ingest_timeout: float = Field(default=2.0, gt=0)  # an append not stored by then answers 503
    ingest_pipelines: int = Field(default=2, ge=1)  # group-commit pipelines in flight per process
    consumer_housekeeping_s: float = Field(default=5.0, gt=0)  # trim + stream gauges this often
    # Heartbeats are partitioned by workload over this many streams; each shard is applied by one
    # lease-holding consumer at a time, so a workload's reports are applied in stream order.
    stream_shards: int = Field(default=DEFAULT_STREAM_SHARDS, ge=1)
    shard_lease_ms: int = Field(default=10_000, ge=300)  # renewed every third; fenced before expiry
    # Test hook only (0 = off): sleep after the DB commit and before the XACK, so a test can SIGKILL
    # a consumer in exactly that window and prove the next consumer applies nothing twice.
    consumer_pause_before_ack_s: float = Field(default=0.0, ge=0)

    # -- pull fallback --------------------------------------------------------------------------
    # Celery's broker. Production: RabbitMQ (quorum queues) or a standalone Redis of its own;
    # never a Redis Cluster, which kombu (Celery's transport) does not speak. Default: the Redis
    # above, fine for one machine.
    broker_url: str | None = None
    # RabbitMQ only: `quorum` declares sweep / poll / sync as quorum queues. A queue's type is
    # fixed when first declared: delete the classic queues before switching an existing vhost.
    broker_queue_type: BrokerQueueType = BrokerQueueType.CLASSIC
    # Beat leader lease: only the beat holding it sends; others wait as hot standbys and take
    # over within about this long after the leader dies (statusd.sweeper.beat_leader).
    beat_lease_ms: int = Field(default=10_000, ge=300)
    sweep_interval: float = Field(default=5.0, gt=0)
    poll_timeout: float = Field(default=2.0, gt=0)
    poll_concurrency: int = Field(default=100, ge=1)
    poll_chunk: int = Field(default=200, ge=1)  # workloads per `poll` task
    poll_max_bytes: int = Field(default=64 * 1024, ge=256)
    unreachable_after: int = Field(default=2, ge=1)
    lost_after: float = Field(default=300.0, gt=0)
    start_timeout: float = Field(default=120.0, gt=0)
    poll_allow_nets: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_POLL_ALLOW_NETS)
    )

    # -- verdicts under doubt (disruption mode, flap damping) ---------------------------
    # Disruption: more than this fraction of the tracked non-final workloads stale at once (and at
    # least disruption_min of them) is more likely our fault or the network's: no UNREACHABLE/LOST.
    disruption_fraction: float = Field(default=0.5, gt=0, le=1)
    disruption_min: int = Field(default=20, ge=1)
    # Flapping: more than flap_max recoveries from UNREACHABLE within flap_window seconds.
    flap_max: int = Field(default=3, ge=1)
    flap_window: float = Field(default=600.0, gt=0)

    # -- main-DB sync ---------------------------------------------------------------------------
    main_api_url: str | None = None
    main_api_token: SecretStr | None = None
    sync_timeout: float = Field(default=5.0, gt=0)
    sync_attempts: int = Field(
        default=5, ge=1
    )  # per run; a later run retries what a run gave up on
    sync_interval: float = Field(default=10.0, gt=0)  # beat drains at least this often
    # Added by the sync work: parallel sends (distinct workloads), the per-row retry budget inside
    # one run, the cap on the between-runs backoff, the claim lease (must outlive one row's sends)
    # and the debounce window of the post-commit kick.
    sync_concurrency: int = Field(default=32, ge=1)
    sync_budget: float = Field(default=20.0, gt=0)
    sync_backoff_max: float = Field(default=300.0, gt=0)
    sync_lease: float = Field(default=60.0, gt=0)
    sync_kick_debounce_ms: int = Field(default=200, ge=1)
    # A drain run yields its worker slot after max(this, 3 x sync_interval) seconds; a run that
    # stopped with rows left is continued (statusd.celery.sync_tasks).
    sync_run_s: float = Field(default=30.0, gt=0)

    # -- on-call --------------------------------------------------------------------------------
    alert_webhooks: Annotated[list[str], NoDecode] = Field(default_factory=list)  # slack format
    # Prometheus Alertmanagers (base URLs): every one gets every alert (an HA pair dedupes).
    alertmanager_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A firing alert is posted again this often while its incident lasts, as Prometheus does:
    # an Alertmanager that restarted (it keeps alerts in memory only) learns it back.
    alertmanager_resend_s: float = Field(default=60.0, gt=0)
    # A JSON array of receivers (statusd.receiver_config): format, url, match, routing key.
    alert_receivers: Annotated[list[Receiver], NoDecode] = Field(default_factory=list)
    alert_templates_dir: Path | None = None  # the Jinja2 files of `template` receivers
    # Where people open statusd (the status pages' links in alerts); unset: http://host:port.
    public_url: str | None = None
    events_ping_interval: float = Field(default=15.0, gt=0)  # SSE `: ping` comment when idle
    events_max_holdback: float = Field(
        default=30.0, gt=0
    )  # SSE: skip a never-committing id after this

    # -- retention (statusd.retention) --------------------------------------------------------
    # Transitions and refused observations of workloads final or deregistered longer than this
    # are deleted (after their daily availability rollup is written); deregistered rows too.
    retain_history_days: float = Field(default=93.0, gt=0)
    # Only the newest N refused observations of each workload are kept (a container stuck on a
    # refused state adds one every heartbeat).
    retain_refused_per_workload: int = Field(default=100, ge=0)
    # Delivered outbox rows older than this are deleted; dead letters too once this old.
    retain_outbox_days: float = Field(default=7.0, gt=0)
    retain_audit_days: float = Field(default=400.0, gt=0)
    # Rows per delete statement: each batch is its own short transaction (no long locks).
    retain_batch: int = Field(default=1000, ge=1)
    retain_interval: float = Field(default=3600.0, gt=0)  # beat prunes this often

    # -- metrics (statusd.oncall.metrics_endpoint) ------------------------------------------------
    # Unset: /metrics is served on the API port (serve only). Set: every process kind (serve,
    # consume, worker) serves its own /metrics on this port and the API port no longer has it.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # Set: /metrics answers 401 without `Authorization: Bearer <token>` (on whichever port).
    metrics_token: SecretStr | None = None

    # -- hardening (HTTP edge) -------------------------------------------------------------------
    # Status-page sessions live this long (server-side in Redis, and the signed cookie's expiry).
    session_ttl: float = Field(default=12 * 3600.0, ge=60)
    # Peers whose X-Forwarded-Proto is believed (CIDRs; default none: only a TLS socket is HTTPS).
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A connection must deliver its request line and headers this long after it opened or after
    # its previous response (also the idle keep-alive limit); the body, this long after those.
    header_timeout: float = Field(default=15.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    # API keys are looked up at most this long ago: a revoked or expired key stops working in
    # every process within it (bounded so that is always within 5 s).
    key_cache_ttl: float = Field(default=2.0, ge=0, le=5)

    @field_validator(
        "poll_allow_nets",
        "alert_webhooks",
        "alertmanager_urls",
        "trusted_proxies",
        "redis_sentinels",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("poll_allow_nets", "trusted_proxies")
    @classmethod
    def _nets(cls, value: list[str], info: ValidationInfo) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                name = f"STATUSD_{(info.field_name or '').upper()}"
                raise ValueError(f"{name}: {net!r} is not a CIDR network") from exc
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _redis_mode(self) -> Settings:
        """Each mode's required settings, named in the one-line CLI error when missing."""
        if self.redis_mode is RedisMode.SENTINEL:
            if not self.redis_sentinels or not self.redis_sentinel_master:
                raise ValueError(
                    "STATUSD_REDIS_MODE=sentinel needs STATUSD_REDIS_SENTINELS (host:port,...) "
                    "and STATUSD_REDIS_SENTINEL_MASTER"
                )
        elif self.redis_mode is RedisMode.CLUSTER and not self.redis_url:
            raise ValueError("STATUSD_REDIS_MODE=cluster needs STATUSD_REDIS_URL (any one node)")
        return self

    @model_validator(mode="after")
    def _templates_dir(self) -> Settings:
        templated = [r.name for r in self.alert_receivers if r.format is ReceiverFormat.TEMPLATE]
        if templated and self.alert_templates_dir is None:
            raise ValueError(
                f"STATUSD_ALERT_RECEIVERS: receiver {templated[0]!r} has format template: "
                "set STATUSD_ALERT_TEMPLATES_DIR"
            )
        return self

    @field_validator("alert_receivers", mode="before")
    @classmethod
    def _receivers(cls, value: object) -> object:
        return parse_receivers(value)

    @field_validator("main_api_url", "alert_webhooks", "alertmanager_urls", "public_url")
    @classmethod
    def _http_urls(cls, value: str | list[str] | None, info: ValidationInfo) -> object:
        """Sync destinations must be http(s) URLs with a host: anything else could never deliver."""

        single = isinstance(value, str)
        name = f"STATUSD_{(info.field_name or '').upper()}"
        for url in [value] if isinstance(value, str) else value or []:
            if not url and single:
                continue  # empty: as when unset (main-DB sync off, the default page URL)
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{name}: {url!r} is not an http(s) URL with a host")
        return value

    # -- derived --------------------------------------------------------------------------------
    @property
    def allow_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(net, strict=False) for net in self.poll_allow_nets]

    @property
    def effective_startup_grace(self) -> float:
        return self.heartbeat_ttl if self.startup_grace is None else self.startup_grace

    @property
    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(net, strict=False) for net in self.trusted_proxies]

    @property
    def alerting_on(self) -> bool:
        """Some alert destination is configured (alert rows are written and drained)."""
        return bool(self.alert_webhooks or self.alertmanager_urls or self.alert_receivers)

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def require_secrets(self) -> None:
        """Refuse to start without real secrets outside dev mode, naming the variable to set."""
        if self.dev:
            return
        for name, value in (("STATUSD_SECRET", self.secret), ("STATUSD_API_TOKEN", self.api_token)):
            raw = value.get_secret_value() if value is not None else ""
            if raw.strip().lower() in PLACEHOLDER_SECRETS:
                raise ConfigError(
                    f"{name} is not set (or is a placeholder). Set it to a long random value, e.g. "
                    f"`export {name}=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')`, "
                    "or run `statusd up` for a dev setup that generates one."
                )
            if len(raw) < 16:
                raise ConfigError(
                    f"{name} is too short ({len(raw)} chars): use at least 16 random characters."
                )

    @property
    def secret_bytes(self) -> bytes:
        if self.secret is None:
            raise ConfigError(
                "STATUSD_SECRET is not set: heartbeat tokens cannot be signed or checked."
            )
        return self.secret.get_secret_value().encode()

    @property
    def previous_secrets(self) -> tuple[bytes, ...]:
        """STATUSD_SECRET_PREVIOUS split on commas (empty entries ignored)."""
        raw = self.secret_previous.get_secret_value() if self.secret_previous else ""
        return tuple(part.strip().encode() for part in raw.split(",") if part.strip())

    @property
    def verifying_secrets(self) -> tuple[bytes, ...]:
        """Every secret a signature may verify under: the current one first, then the previous."""
        return (self.secret_bytes, *self.previous_secrets)

    @property
    def effective_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        # Celery's transport (kombu) speaks neither Redis Cluster nor our sentinel settings: only
        # a standalone Redis may double as the broker.
        if self.redis_url and self.redis_mode is RedisMode.STANDALONE:
            return self.redis_url
        raise ConfigError(
            "No broker: set STATUSD_BROKER_URL or STATUSD_REDIS_URL (or run `statusd up`); with "
            "STATUSD_REDIS_MODE=cluster or sentinel, STATUSD_BROKER_URL (RabbitMQ or a standalone "
            "Redis), since Celery's transport does not speak Redis Cluster."
        )
