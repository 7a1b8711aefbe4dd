"""A PostgreSQL server of the chaos run's own, so the nemesis may crash and restart it.

initdb + pg_ctl from the newest /usr/lib/postgresql/*/bin (or STATUSD_CHAOS_PG_BINDIR), in the run's
directory, on a free loopback port; as the `postgres` user when the harness runs as root (initdb
refuses root). Never the machine's shared server: that one is only ever made unreachable for the
run's own database, never restarted.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

USER = "postgres"
HOST = "127.0.0.1"


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
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
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

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            # The server's user must reach its directory through the run's (mkdtemp: 0700).
            self.root.parent.chmod(0o711)
            entry = pwd.getpwnam(USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
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
