"""A real PostgreSQL primary and streaming replica on loopback, in a temporary directory.

    with ReplicatedPostgres(synchronous=True) as pg:
        url = pg.multi_host_url("statusd")   # postgresql://postgres@127.0.0.1:P,127.0.0.1:R/statusd
        ...
        pg.lag_replica()                     # optional: the WAL held back, the replica falls behind
        pg.stop_primary()                    # pg_ctl stop -m immediate: a crash, not a shutdown
        pg.promote_replica()                 # pg_ctl promote, waits until it accepts writes

The replica streams through a relay in this process (`ReplicationLink`) that can hold the WAL
back. The servers run as the `postgres` user when the tests run as root (initdb refuses root), from
the server binaries of the newest installed major version (or STATUSD_TEST_PG_BINDIR). Absent
binaries skip the test, except on CI (CI=true), where the failover test must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import asyncpg
import psutil
import pytest

from tests.support.databases import ON_CI
from tests.support.processes import free_port

HOST = "127.0.0.1"
USER = "postgres"
REPLICA_NAME = "statusd_replica"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10


def _postmaster_pid(data: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((data / "postmaster.pid").read_text().split()[0])
    return None


def server_bindir() -> Path | None:
    """Where initdb / pg_ctl / pg_basebackup live, or None when no server is installed."""
    explicit = os.environ.get("STATUSD_TEST_PG_BINDIR")
    candidates = [Path(explicit)] if explicit else []
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return directory
    return None


def require_server_binaries() -> Path:
    found = server_bindir()
    if found is not None:
        return found
    message = "no PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) found"
    if ON_CI:
        pytest.fail(f"CI=true but {message}: the failover test must run on CI")
    pytest.skip(message)


class ReplicatedPostgres:
    """A primary and one streaming replica; `synchronous` makes every commit wait for the replica."""

    def __init__(self, *, synchronous: bool) -> None:
        self.bindir = require_server_binaries()
        self.synchronous = synchronous
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="statusd-pgfailover-"))
        self.primary_dir = self.root / "primary"
        self.replica_dir = self.root / "replica"
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.running: list[Path] = []
        self.link: ReplicationLink | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> ReplicatedPostgres:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        if self.as_root:
            entry = pwd.getpwnam(USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-N", "-D", str(self.primary_dir), "-U", USER, "--auth=trust", "-E", "UTF8"
        )
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.primary_port),
            "unix_socket_directories": f"'{self.root}'",
            "wal_level": "replica",
            "max_wal_senders": "4",
            "hot_standby": "on",
            # The machine is shared: keep each server small. fsync off only skips the disk
            # flush, which a killed process (not a lost machine) never needed.
            "fsync": "off",
            "shared_buffers": "16MB",
            "max_connections": "60",
            "synchronous_commit": "on",
            "synchronous_standby_names": f"'{REPLICA_NAME}'" if self.synchronous else "''",
        }
        conf = self.primary_dir / "postgresql.conf"
        with conf.open("a") as out:
            out.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._pg_ctl_start(self.primary_dir)
        self.link = ReplicationLink(self.primary_port)
        self._run(
            "pg_basebackup",
            "-D",
            str(self.replica_dir),
            "-R",
            "-X",
            "stream",
            "-d",
            f"host={HOST} port={self.primary_port} user={USER}",
        )
        # The replica's own port, and the name the primary's synchronous_standby_names waits for.
        # Promoted, it has no standby of its own: waiting for one would stall every commit.
        with (self.replica_dir / "postgresql.auto.conf").open("a") as out:
            out.write(f"port = {self.replica_port}\n")
            out.write("synchronous_standby_names = ''\n")
            out.write(
                f"primary_conninfo = 'host={HOST} port={self.link.port} user={USER} "
                f"application_name={REPLICA_NAME}'\n"
            )
        self._pg_ctl_start(self.replica_dir)
        self._wait_streaming()

    def close(self) -> None:
        """Stop both servers (immediately: nothing to keep) and remove the directory."""
        for data in list(self.running):
            self._stop(data)
        if self.link is not None:
            self.link.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- faults -------------------------------------------------------------------------------

    def lag_replica(self) -> None:
        """From now on the replica receives nothing: it falls behind the primary."""
        assert self.link is not None
        self.link.hold()

    def stop_primary(self) -> None:
        """The primary dies: `pg_ctl stop -m immediate` (no shutdown checkpoint, like a crash).
        What it had sent still reaches the replica, unless the link was holding it back: that
        is lost with it."""
        assert self.link is not None
        self._stop(self.primary_dir)
        self.link.sever()

    def promote_replica(self) -> None:
        """`pg_ctl promote --wait`: returns once the replica accepts writes."""
        self._run(
            "pg_ctl", "promote", "-w", "-t", str(int(START_TIMEOUT_S)), "-D", str(self.replica_dir)
        )

    # -- addresses and queries ----------------------------------------------------------------

    def multi_host_url(self, database: str) -> str:
        """libpq's multi-host form, primary first; statusd adds target_session_attrs=read-write."""
        hosts = f"{HOST}:{self.primary_port},{HOST}:{self.replica_port}"
        return f"postgresql://{USER}@{hosts}/{database}?target_session_attrs=read-write"

    def create_database(self, name: str) -> None:
        asyncio.run(self._execute(self.primary_port, f'CREATE DATABASE "{name}"'))

    def replication_lag_bytes(self) -> int | None:
        """WAL the primary wrote that the replica has not flushed yet (None if not streaming)."""
        sql = (
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::bigint "
            f"FROM pg_stat_replication WHERE application_name = '{REPLICA_NAME}'"
        )
        value = asyncio.run(self._fetchval(self.primary_port, sql))
        return None if value is None else int(value)

    async def _execute(self, port: int, sql: str) -> None:
        conn = await asyncpg.connect(host=HOST, port=port, user=USER, database="postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def _fetchval(self, port: int, sql: str) -> object:
        conn = await asyncpg.connect(host=HOST, port=port, user=USER, database="postgres")
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    def _wait_streaming(self) -> None:
        wanted = "sync" if self.synchronous else "async"
        sql = (
            "SELECT sync_state FROM pg_stat_replication "
            f"WHERE application_name = '{REPLICA_NAME}' AND state = 'streaming'"
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        state: object = None
        while time.monotonic() < deadline:
            state = asyncio.run(self._fetchval(self.primary_port, sql))
            if state == wanted:
                return
            time.sleep(0.1)
        raise AssertionError(
            f"the replica is not streaming ({wanted}) after {START_TIMEOUT_S}s: {state}"
        )

    # -- processes ----------------------------------------------------------------------------

    def _pg_ctl_start(self, data: Path) -> None:
        self._run(
            "pg_ctl", "start", "-w", "-t", str(int(START_TIMEOUT_S)), "-D", str(data),
            "-l", str(self.root / f"{data.name}.log"),
        )  # fmt: skip
        self.running.append(data)

    def _stop(self, data: Path) -> None:
        """`pg_ctl stop -m immediate`; a server still up after STOP_TIMEOUT_S (seen on this
        shared machine, rarely) is SIGKILLed, which is a crash all the same."""
        if data not in self.running:
            return
        self.running.remove(data)
        pid = _postmaster_pid(data)
        try:
            self._run(
                "pg_ctl", "stop", "-m", "immediate", "-w", "-t", str(STOP_TIMEOUT_S), "-D", str(data)
            )  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            print(f"pg_ctl stop failed ({exc}); SIGKILL\n{self.server_log(data.name)}")
            if pid is not None:
                with contextlib.suppress(psutil.Error):
                    server = psutil.Process(pid)
                    for proc in [*server.children(recursive=True), server]:
                        with contextlib.suppress(psutil.Error):
                            proc.kill()
                    psutil.wait_procs([server], timeout=10)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", USER, "--", *command]
        done = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=START_TIMEOUT_S * 2
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(
                done.returncode, command, output=done.stdout, stderr=done.stderr
            )

    def server_log(self, which: str) -> str:
        with contextlib.suppress(OSError):
            return (self.root / f"{which}.log").read_text(errors="replace")[-4000:]
        return "<no log>"


class ReplicationLink:
    """A TCP relay between the replica and the primary that can hold the WAL back, so the replica
    falls behind on demand (the lag a busy network or a slow disk makes), on its own thread.

    `hold()`: what the primary sends is kept here, not delivered; `sever()`: the held bytes are
    thrown away and the link closed, as a crash of the primary loses what was still in flight."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.held = False
        self.severed = False
        self.pending: list[tuple[asyncio.StreamWriter, bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise AssertionError("the replication relay did not start")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._accept, HOST, self.port))
        ready.set()
        self.loop.run_forever()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        server.close()
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            writer.close()
            return
        self.writers += [writer, up_writer]
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, holdable=False),
                self._pipe(up_reader, writer, holdable=True),
                return_exceptions=True,
            )
        finally:
            for w in (writer, up_writer):
                w.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, holdable: bool
    ) -> None:
        while not self.severed:
            data = await reader.read(65536)
            if not data:
                break
            if holdable and self.held:
                self.pending.append((writer, data))
                continue
            writer.write(data)
            await writer.drain()
        if not self.severed:
            writer.close()

    def hold(self) -> None:
        """Returns once nothing more is delivered."""

        async def hold() -> None:
            self.held = True

        asyncio.run_coroutine_threadsafe(hold(), self.loop).result(10)

    def sever(self) -> None:
        def cut() -> None:
            self.severed = True
            self.pending.clear()
            for writer in self.writers:
                writer.transport.abort()

        self.loop.call_soon_threadsafe(cut)

    def close(self) -> None:
        if self.loop.is_running():
            self.sever()
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
