"""status_url policy: the platform registers it, statusd fetches it, so it is an SSRF risk.

Only http/https, only to addresses inside STATUSD_POLL_ALLOW_NETS, checked after DNS resolution
(a hostname that resolves to a forbidden address is refused, whatever its name looks like). The
poller re-checks the resolved address at poll time too (DNS can change after registration).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from statusd.errors import UnsafeStatusURL

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URL_LENGTH = 2048


async def resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeStatusURL(f"status_url host {host!r} does not resolve: {exc.strerror}") from exc
    return sorted({str(info[4][0]) for info in infos})


def allowed(address: str, allow: Sequence[Network]) -> bool:
    """True when an IP address (zone id stripped) lies inside one of the allowed networks."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return any(ip in net for net in allow)


def _literal_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


def check_syntax(url: str, allow: Sequence[Network]) -> tuple[str, int]:
    """Checks that need no DNS (scheme, host, credentials, port, an IP-literal host's network).

    Returns (host, port). The poller runs this before every request; for host names the
    AllowListResolver below checks the address actually connected to."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeStatusURL(f"status_url is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeStatusURL(
            f"status_url scheme must be http or https, not {parts.scheme or 'missing'!r}"
        )
    if not parts.hostname:
        raise UnsafeStatusURL("status_url has no host")
    if parts.username or parts.password:
        raise UnsafeStatusURL("status_url must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeStatusURL(f"status_url port is invalid: {exc}") from exc
    literal = _literal_ip(parts.hostname)
    if literal is not None and not allowed(literal, allow):
        raise UnsafeStatusURL(f"status_url address {literal} is outside STATUSD_POLL_ALLOW_NETS")
    return parts.hostname, port


async def check_status_url(url: str, allow: Sequence[Network]) -> list[str]:
    """Return the resolved addresses of a safe status_url; raise UnsafeStatusURL naming the problem.

    Every address the name resolves to must be allowed: a name with one private and one public
    address is refused, since the client may connect to either."""
    host, port = check_syntax(url, allow)
    addresses = await resolve(host, port)
    for address in addresses:
        if not allowed(address, allow):
            raise UnsafeStatusURL(
                f"status_url host {host!r} resolves to {address}, outside STATUSD_POLL_ALLOW_NETS"
            )
    return addresses


class AllowListResolver(AbstractResolver):
    """aiohttp resolver for the poller: resolves, then refuses any address outside the allow-list.

    DNS may change after registration (rebinding), so the check is repeated on the very addresses
    the connection will use, at poll time. Raises UnsafeStatusURL (not OSError, so aiohttp does
    not wrap it as a DNS error and the poller reports it as `blocked`)."""

    def __init__(self, allow: Sequence[Network]) -> None:
        self._allow = tuple(allow)
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not allowed(result["host"], self._allow):
                raise UnsafeStatusURL(
                    f"status_url host {host!r} resolves to {result['host']}, "
                    "outside STATUSD_POLL_ALLOW_NETS"
                )
        return results

    async def close(self) -> None:
        await self._inner.close()
