"""Real Redis Cluster and Sentinel deployments on loopback for tests (free ports, own dirs).

- `RedisClusterProcs`: six `redis-server --cluster-enabled yes` joined by
  `redis-cli --cluster create ... --cluster-replicas 1` (3 primaries, one replica each), with a
  short node timeout so a killed primary's replica is promoted in a couple of seconds.
- `SentinelProcs`: a primary, one replica and three `redis-server --sentinel` watching it.

Every process is started here and killed in `stop()` (safe in `finally`).
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_sync

from statusd.redis_runtime import find_redis_server, free_port

NODE_TIMEOUT_MS = 1000


def _cli() -> str:
    server = find_redis_server() or "redis-server"
    return str(Path(server).with_name("redis-cli"))


def _wait(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()  # type: ignore[operator]
            if last:
                return
        except (redis_sync.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too: Redis Cluster needs <= 55535,
    which the kernel's ephemeral range (what free_port gets) usually is not."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class _Server:
    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> redis_sync.Redis:
        return redis_sync.Redis(port=self.port, socket_timeout=2)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _start(args: list[str], port: int, workdir: Path) -> _Server:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            *args,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(workdir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return _Server(port, proc)


def start_replica(primary_port: int, workdir: Path) -> _Server:
    """A redis-server replicating the one on `primary_port` (linked once this returns)."""
    server = _start(
        [find_redis_server() or "redis-server", "--replicaof", "127.0.0.1", str(primary_port)],
        free_port(),
        workdir,
    )

    def linked() -> bool:
        with server.client() as c:
            return c.info("replication").get("master_link_status") == "up"

    _wait(linked, "the replica linked")
    return server


@dataclass
class RedisClusterProcs:
    base: Path
    nodes: list[_Server] = field(default_factory=list)

    def start(self) -> str:
        server = find_redis_server() or "redis-server"
        for n in range(6):
            port = cluster_port()
            self.nodes.append(
                _start(
                    [
                        server,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        str(NODE_TIMEOUT_MS),
                    ],
                    port,
                    self.base / f"node{n}",
                )
            )
        for node in self.nodes:
            _wait(lambda node=node: _answers(node.port), f"cluster node {node.port}")
        subprocess.run(
            [
                _cli(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait(self._settled, "the cluster ok with 3 primaries, each with a replica")
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def _settled(self) -> bool:
        for node in self.live():
            with node.client() as c:
                info = c.execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info:
                    return False
        return len(self.primaries_with_replicas()) == 3

    def live(self) -> list[_Server]:
        return [n for n in self.nodes if n.process.poll() is None]

    def primaries_with_replicas(self) -> list[_Server]:
        out = []
        for node in self.live():
            with node.client() as c:
                info = c.info("replication")
                if info.get("role") == "master" and int(info.get("connected_slaves", 0)) > 0:
                    out.append(node)
        return out

    def primary_of(self, key: str) -> _Server:
        with self.live()[0].client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no primary for {key}")

    def wait_promoted(self, killed: _Server) -> None:
        """Until every slot is served again (the killed primary's replica took over)."""

        def ok() -> bool:
            for node in self.live():
                with node.client() as c:
                    if "cluster_state:ok" not in c.execute_command("CLUSTER", "INFO").decode():
                        return False
            return True

        _wait(ok, f"a replica promoted in place of {killed.port}", timeout=30)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


SENTINEL_CONF = """port {port}
bind 127.0.0.1
dir {dir}
sentinel monitor {name} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {name} 1000
sentinel failover-timeout {name} 5000
sentinel parallel-syncs {name} 1
"""


@dataclass
class SentinelProcs:
    base: Path
    name: str = "statusd-primary"
    primary: _Server | None = None
    replica: _Server | None = None
    sentinels: list[_Server] = field(default_factory=list)

    def start(self) -> list[str]:
        """Start everything; returns the sentinels' host:port list."""
        server = find_redis_server() or "redis-server"
        self.primary = _start([server], free_port(), self.base / "primary")
        _wait(lambda: _answers(self.primary.port), "the primary")  # type: ignore[union-attr]
        port = free_port()
        self.replica = _start(
            [server, "--replicaof", "127.0.0.1", str(self.primary.port)], port, self.base / "r"
        )

        def linked() -> bool:
            assert self.primary is not None
            with self.primary.client() as c:
                return int(c.info("replication").get("connected_slaves", 0)) == 1

        _wait(linked, "the replica linked to the primary")
        for n in range(3):
            port = free_port()
            workdir = self.base / f"sentinel{n}"
            workdir.mkdir(parents=True, exist_ok=True)
            conf = workdir / "sentinel.conf"
            conf.write_text(
                SENTINEL_CONF.format(
                    port=port, dir=workdir, name=self.name, primary=self.primary.port
                )
            )
            proc = subprocess.Popen(
                [server, str(conf), "--sentinel", "--logfile", str(workdir / "sentinel.log")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.sentinels.append(_Server(port, proc))

        def known() -> bool:
            for s in self.sentinels:
                with s.client() as c:
                    info = c.sentinel_master(self.name)  # parsed by redis-py into a dict
                    if int(info["num-other-sentinels"]) < 2 or int(info["num-slaves"]) < 1:
                        return False
            return True

        _wait(known, "the sentinels to know each other and the replica")
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def current_primary_port(self) -> int:
        with self.sentinels[0].client() as c:
            _, port = c.sentinel_get_master_addr_by_name(self.name)
            return int(port)

    def stop(self) -> None:
        for s in [*self.sentinels, self.replica, self.primary]:
            if s is not None:
                s.kill()
