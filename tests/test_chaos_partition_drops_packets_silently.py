"""The chaos run's partitions (bench/chaos_netns.py): a process in a namespace of the run's own
reaches a real Redis through its veth at the bridge's address; with its link set down the same
Redis gives no answer at all (a timeout, neither a refusal nor "host unreachable"), on the open
connection and on a new one; after the heal it answers again. Closing the network leaves no
namespace or link behind, and a dead run's leftovers are removed by the next run.
Creating namespaces needs root; elsewhere the test skips.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chaos_network import chaos_netns, open_network
from tests.support.redis_proc import RedisProcess

# Inside the namespace: one connection, PING, then (after a line on stdin) PING again on it and
# on a new connection; each answer or the error's name, one per line.
CLIENT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
def ping(sock):
    try:
        sock.sendall(b"PING\\r\\n")
        return sock.recv(64).decode().strip() or "closed"
    except OSError as exc:
        return type(exc).__name__
def connect():
    try:
        return socket.create_connection((host, port), timeout=2)
    except OSError as exc:
        print(type(exc).__name__, flush=True)
        return None
sock = connect()
print(ping(sock), flush=True)
sys.stdin.readline()
print(ping(sock), flush=True)
fresh = connect()
if fresh is not None:
    print(ping(fresh), flush=True)
"""


@pytest.fixture
def network() -> Iterator[Any]:
    with open_network(["inside"]) as net:
        yield net


def _links_and_namespaces(marker: str) -> str:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return "\n".join(line for line in (links.stdout + spaces.stdout).splitlines() if marker in line)


def test_a_cut_link_drops_packets_and_a_healed_one_carries_them(
    tmp_path: Path, network: Any
) -> None:
    net = network
    redis = RedisProcess(tmp_path / "redis")
    redis.bind = ("127.0.0.1", net.host)
    redis.start()
    ns = net.namespaces["inside"]
    argv = [sys.executable, "-c", CLIENT, net.host, str(redis.port)]
    clients: list[subprocess.Popen[str]] = []

    def client() -> subprocess.Popen[str]:
        clients.append(
            subprocess.Popen(
                ns.command(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )
        return clients[-1]

    try:
        cut = client()
        assert cut.stdout is not None and cut.stdin is not None
        assert cut.stdout.readline().strip() == "+PONG"
        ns.cut()
        out, _ = cut.communicate("go\n", timeout=30)
        # The open connection and a new one both time out: dropped, not refused or unreachable.
        assert out.split() == ["TimeoutError", "TimeoutError"]
        ns.heal()
        out, _ = client().communicate("go\n", timeout=30)
        assert out.split() == ["+PONG", "+PONG", "+PONG"]
    finally:
        for proc in clients:  # a process left inside would keep the namespace alive
            proc.kill()
            proc.wait()
        redis.stop()


def test_close_and_remove_stale_leave_no_namespace_or_link() -> None:
    problem = chaos_netns.problem()
    if problem is not None:
        pytest.skip(problem)
    live = chaos_netns.Network()
    live.open(["a", "b"], {"b"})
    marker = f"sdc{live.pid}"
    assert _links_and_namespaces(marker)
    live.close()
    assert _links_and_namespaces(marker) == ""
    # A run that died without closing: its pid is gone, the next run's open removes its network.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)  # fmt: skip
    orphan = chaos_netns.Network(pid=int(dead.stdout))
    orphan.open(["a"], {"a"})
    assert _links_and_namespaces(f"sdc{orphan.pid}")
    removed = chaos_netns.remove_stale()
    assert f"sdc{orphan.pid}n0" in removed
    assert _links_and_namespaces(f"sdc{orphan.pid}") == ""
