"""The chaos run's own PostgreSQL: a primary and a synchronous streaming replica, so the nemesis
may crash, restart and fail over the database.

initdb + pg_ctl + pg_basebackup from the newest /usr/lib/postgresql/*/bin (or
STATUSD_CHAOS_PG_BINDIR), in the run's directory, on free loopback ports; as the `postgres` user
when the harness runs as root (initdb refuses root). Never the machine's shared server: that one is
only ever made unreachable for the run's own database, never restarted.

    pair = PgPair(work / "pg", bindir, (port_a, port_b))
    pair.init(); pair.start()       # node a primary, node b its synchronous replica
    pair.crash(); pair.start()      # the primary crashes and restarts (the replica waits for it)
    pair.crash(); pair.promote()    # failover: the replica is the primary now...
    pair.rebuild()                  # ...and the old primary, from a fresh base backup, its replica
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import asyncpg

USER = "postgres"
HOST = "127.0.0.1"
NODE_NAMES = ("statusd_a", "statusd_b")  # each node's application_name as a replica
REPLICA_WAIT_S = 60.0


def server_bindir() -> Path | None:
    explicit = os.environ.get("STATUSD_CHAOS_PG_BINDIR")
    candidates = [Path(explicit)] if explicit else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return directory
    return None


class PgCluster:
    """One server; `crash` is `pg_ctl stop -m immediate` (no checkpoint: crash recovery on start)."""

    def __init__(self, root: Path, port: int, bindir: Path) -> None:
        self.root, self.port, self.bindir = root, port, bindir
        self.data = root / "data"
        self.log = root / "server.log"
        self.as_root = os.geteuid() == 0

    @property
    def admin_url(self) -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        command = [str(self.bindir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def prepare(self) -> None:
        """The node's directory, owned by the server's user."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            # The server's user must reach its directory through the run's (mkdtemp: 0700).
            for parent in self.root.parents[:2]:
                parent.chmod(0o711)
            entry = pwd.getpwnam(USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def init(self, settings: dict[str, str] | None = None) -> None:
        self.prepare()
        self._run("initdb", "-N", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8")
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            # A shared 2-core machine: keep it small. fsync off only skips the disk flush, which
            # a killed server (not a lost machine) never needs; commits stay synchronous.
            "fsync": "off",
            "shared_buffers": "32MB",
            "max_connections": "200",
            **(settings or {}),
        }
        with (self.data / "postgresql.conf").open("a") as out:
            out.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log))

    def crash(self) -> None:
        self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data), timeout=30)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.data), timeout=60)


# Streaming replication, each commit acknowledged only once the replica has flushed it.
REPLICATION = {
    "wal_level": "replica",
    "max_wal_senders": "4",
    "hot_standby": "on",
    "synchronous_commit": "on",
    # Until a replica streams, nothing to wait for (PgPair.rebuild names it once it does).
    "synchronous_standby_names": "''",
    # A replica whose primary restarted reconnects within a second (the default is 5 s, during
    # which every commit on the restarted primary waits for it).
    "wal_retrieve_retry_interval": "1s",
}


class PgPair:
    """Two nodes, a primary and its synchronous streaming replica, with the interface of one
    server (`admin_url`, `start`, `crash`, `stop` act on whichever node is the primary now) and
    a failover: `crash`, `promote`, `rebuild`.

    The window without a synchronous replica: from `promote` until `rebuild` has the old primary
    streaming again, the new primary's `synchronous_standby_names` is empty, so its commits are
    acknowledged with one copy (waiting for a standby that does not exist would stop every write
    until the rebuild). `rebuild` names the new replica once it streams. `timings` records, per
    failover, how long each step took."""

    def __init__(self, root: Path, bindir: Path, ports: tuple[int, int]) -> None:
        self.nodes = [
            PgCluster(root / name, port, bindir)
            for name, port in zip(NODE_NAMES, ports, strict=True)
        ]
        self.primary_at = 0
        self.timings: list[dict[str, float]] = []

    @property
    def primary(self) -> PgCluster:
        return self.nodes[self.primary_at]

    @property
    def replica(self) -> PgCluster:
        return self.nodes[1 - self.primary_at]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def admin_url(self) -> str:
        return self.primary.admin_url

    def init(self) -> None:
        self.primary.init(REPLICATION)
        self.replica.prepare()

    def start(self) -> None:
        """The primary; the first time, its replica too."""
        self.primary.start()
        if not (self.replica.data / "PG_VERSION").exists():
            self.rebuild()

    def crash(self) -> None:
        self.primary.crash()

    def promote(self) -> None:
        """`pg_ctl promote --wait`: the replica accepts writes when it returns; the crashed node
        is now the one `rebuild` makes the replica."""
        replica = self.replica
        started = time.monotonic()
        replica._run("pg_ctl", "promote", "-w", "-t", "60", "-D", str(replica.data))
        self.primary_at = 1 - self.primary_at
        self.timings.append({"promote_s": round(time.monotonic() - started, 2)})

    def rebuild(self) -> None:
        """The node that is not the primary, from a fresh base backup of the primary (its own
        data, which may hold WAL the primary never had, is thrown away), streaming; then the
        primary waits for it on every commit again."""
        node, primary = self.replica, self.primary
        started = time.monotonic()
        if (node.data / "postmaster.pid").exists():
            node.crash()
        shutil.rmtree(node.data, ignore_errors=True)
        node._run(
            "pg_basebackup", "-D", str(node.data), "-R", "-X", "stream", "-c", "fast",
            "-d", f"host={HOST} port={primary.port} user={USER}",
        )  # fmt: skip
        name = NODE_NAMES[self.nodes.index(node)]
        # The base backup copied the primary's postgresql.auto.conf (its port, its own standby
        # name): this node's replaces it. Empty standby names: promoted one day, it must not wait
        # for a replica it does not have yet.
        (node.data / "postgresql.auto.conf").write_text(
            f"port = {node.port}\n"
            "synchronous_standby_names = ''\n"
            f"primary_conninfo = 'host={HOST} port={primary.port} user={USER} "
            f"application_name={name}'\n"
        )
        node.start()
        _wait_for(primary, f"SELECT 1 FROM pg_stat_replication WHERE application_name = '{name}' "
                  "AND state = 'streaming'")  # fmt: skip
        _execute(primary, f"ALTER SYSTEM SET synchronous_standby_names = '{name}'")
        _execute(primary, "SELECT pg_reload_conf()")
        _wait_for(primary, f"SELECT 1 FROM pg_stat_replication WHERE application_name = '{name}' "
                  "AND sync_state = 'sync'")  # fmt: skip
        if self.timings:
            self.timings[-1]["rebuild_s"] = round(time.monotonic() - started, 2)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _execute(node: PgCluster, sql: str) -> object:
    async def one() -> object:
        conn = await asyncpg.connect(node.admin_url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(one())


def _wait_for(node: PgCluster, sql: str) -> None:
    deadline = time.monotonic() + REPLICA_WAIT_S
    while _execute(node, sql) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not after {REPLICA_WAIT_S:g} s: {sql}")
        time.sleep(0.1)
