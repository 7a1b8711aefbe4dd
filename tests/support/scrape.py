"""Scraping a real /metrics: samples as a dict, and the family names a scrape declares."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def families(text: str) -> set[str]:
    """Every family a scrape declares (# TYPE), with or without samples yet."""
    return {family.name for family in text_string_to_metric_families(text)}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str) -> float:
    """The sum over every label set of `name`."""
    return sum(v for (n, _), v in samples.items() if n == name)


def get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of a GET; (0, reason) when nothing answers."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def scrape_until(
    url: str,
    done: Callable[[Samples], bool],
    *,
    timeout: float = 60.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[Samples, str]:
    """Scrape `url` until `done(samples)`; fail with the last answer after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        status, body = get(url, headers)
        last = f"{status}: {body[-2000:]}"
        if status == 200:
            samples = parse(body)
            if done(samples):
                return samples, body
        time.sleep(0.3)
    raise AssertionError(f"{url}: condition not met within {timeout}s; last answer {last}")


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held together while chosen, so never the same one
    twice, as separate free_port() calls can be when nothing has bound the first yet)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports
