"""Network partitions for the chaos run: statusd processes in network namespaces of the run's own.

Layout (root only; `problem()` says why not elsewhere):

    root namespace                                    namespace sdc<pid>n<i>
    bridge sdc<pid>br 10.199.<x>.1/24  --port sdc<pid>h<i>--veth--  sdc<pid>p<i> 10.199.<x>.<10+i>
    (Redis, PostgreSQL, the main API and the alert receiver also listen here)
    sdc<pid>f<i> 10.198.<x>.<4i+1>/30  ----------------veth--------  sdc<pid>q<i> 10.198.<x>.<4i+2>
    (the front link: only for a process the fleet must reach, a `serve`)

A partition sets the bridge port sdc<pid>h<i> down: the bridge keeps its address and the namespace
its route, so nothing is refused or reset; every packet between the process and Redis or
PostgreSQL is dropped silently, both ways. The neighbour entries are permanent on both sides, so
no ARP probe fails either (that would turn the silence into "host unreachable" on new connects).
The front link is never cut: a partitioned `serve` is still reached by the fleet and must answer
it without its Redis, as one cut off behind a load balancer would.

Every name carries the run's pid, so the links and namespaces of a run that died without cleaning
up (SIGKILL) are found and removed by the next run (`remove_stale`).
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

NAME = re.compile(r"^sdc(\d+)(br|[hpfqn]\d+)$")
DATA_NET = "10.199"  # 10.199.<x>.0/24: the bridge, one /24 per concurrent run
FRONT_NET = "10.198"  # 10.198.<x>.<4i>/30: the front links


def problem() -> str | None:
    """Why this machine cannot give the run namespaces, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(owned: Callable[[int], bool]) -> list[str]:
    """Delete every namespace and link named for a pid `owned` accepts; returns their names."""
    removed = []
    namespaces = [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line]
    links = [
        line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link").stdout.splitlines()
    ]
    for name in namespaces + links:
        match = NAME.match(name)
        if match and owned(int(match.group(1))):
            # A namespace's own veth ends go with it, and take their peers along.
            if name in namespaces:
                _ip("netns", "delete", name, check=False)
            else:
                _ip("link", "delete", name, check=False)
            removed.append(name)
    return removed


def remove_stale() -> list[str]:
    """Delete the namespaces and links of runs whose process is gone; returns what it removed."""
    return _remove(lambda pid: not _alive(pid))


def _free_subnet() -> int:
    """The third octet of a 10.199.<x>.0/24 no interface of this machine is in."""
    used = _ip("-o", "-4", "addr").stdout
    taken = {int(m) for m in re.findall(rf"{re.escape(DATA_NET)}\.(\d+)\.", used)}
    taken |= {int(m) for m in re.findall(rf"{re.escape(FRONT_NET)}\.(\d+)\.", used)}
    free = [x for x in range(1, 255) if x not in taken]
    if not free:
        raise RuntimeError(f"no free {DATA_NET}.<x>.0/24 for the run's bridge")
    return free[os.getpid() % len(free)]


def _mac(x: int, kind: int, i: int) -> str:
    return f"02:5d:{x:02x}:{kind:02x}:{i:02x}:01"


@dataclass
class Namespace:
    """One statusd process's namespace: its data link (cut by a partition), maybe a front link."""

    name: str
    port: str  # the bridge port in the root namespace: set down to partition
    address: str  # the process's address on the data link
    front: str | None = None  # the address the fleet reaches it at, if it has a front link

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace (`ip netns exec` execs it: the pid is argv's own)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        _ip("link", "set", self.port, "down")

    def heal(self) -> None:
        _ip("link", "set", self.port, "up")


@dataclass
class Network:
    """The run's bridge and namespaces; `close` removes them (also at exit, on Ctrl-C)."""

    pid: int = field(default_factory=os.getpid)
    subnet: int = 0
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    bridge: str = ""

    @property
    def host(self) -> str:
        """Where the namespaced processes reach Redis, PostgreSQL, the main API, the alerts."""
        return f"{DATA_NET}.{self.subnet}.1"

    @property
    def cidr(self) -> str:
        return f"{DATA_NET}.{self.subnet}.0/24"

    def open(self, names: list[str], fronted: set[str]) -> None:
        """A namespace per process name; `fronted` ones get a front link the fleet reaches."""
        remove_stale()
        self.subnet = _free_subnet()
        self.bridge = f"sdc{self.pid}br"
        atexit.register(self.close)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "address", _mac(self.subnet, 0, 0))
        _ip("addr", "add", f"{self.host}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(names):
            self.namespaces[name] = self._add(i, name in fronted)

    def _add(self, i: int, fronted: bool) -> Namespace:
        ns = Namespace(
            f"sdc{self.pid}n{i}", f"sdc{self.pid}h{i}", f"{DATA_NET}.{self.subnet}.{10 + i}"
        )
        inner = f"sdc{self.pid}p{i}"
        _ip("netns", "add", ns.name)
        _ip("-n", ns.name, "link", "set", "lo", "up")
        _ip("link", "add", ns.port, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "address", _mac(self.subnet, 1, i), "netns", ns.name)
        _ip("link", "set", ns.port, "master", self.bridge, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.address}/24", "dev", inner)
        _ip("-n", ns.name, "link", "set", inner, "up")
        # Permanent neighbours: a cut link drops packets and nothing else tells either side.
        bridge_mac = _mac(self.subnet, 0, 0)
        _ip("-n", ns.name, "neigh", "replace", self.host, "lladdr", bridge_mac, "dev", inner, "nud", "permanent")  # fmt: skip
        _ip("neigh", "replace", ns.address, "lladdr", _mac(self.subnet, 1, i), "dev", self.bridge, "nud", "permanent")  # fmt: skip
        if fronted:
            outer, inner_front = f"sdc{self.pid}f{i}", f"sdc{self.pid}q{i}"
            base = ipaddress.ip_address(f"{FRONT_NET}.{self.subnet}.0") + 4 * i
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner_front)
            _ip("link", "set", inner_front, "netns", ns.name)
            _ip("addr", "add", f"{base + 1}/30", "dev", outer)
            _ip("link", "set", outer, "up")
            _ip("-n", ns.name, "addr", "add", f"{base + 2}/30", "dev", inner_front)
            _ip("-n", ns.name, "link", "set", inner_front, "up")
            ns.front = str(base + 2)
        return ns

    def close(self) -> None:
        """Remove every namespace and link named for this run (their veths go with the
        namespaces), also those a failed `open` left half made; idempotent."""
        _remove(lambda pid: pid == self.pid)
        self.namespaces.clear()
        self.bridge = ""


def admit_postgres(data_dir: Path, host: str, cidr: str) -> None:
    """Before the server starts: listen on `host` too, and trust the namespaces' subnet."""
    with (data_dir / "postgresql.conf").open("a") as out:
        out.write(f"listen_addresses = '127.0.0.1,{host}'\n")
    with (data_dir / "pg_hba.conf").open("a") as out:
        out.write(f"host all all {cidr} trust\n")
