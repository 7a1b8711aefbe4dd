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


async def check_status_url(url: str, allow: Sequence[Network]) -> list[str]:
    """Return the resolved addresses of a safe status_url; raise UnsafeStatusURL naming the problem."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeStatusURL(f"status_url is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeStatusURL(f"status_url scheme must be http or https, not {parts.scheme or 'missing'!r}")
    if not parts.hostname:
        raise UnsafeStatusURL("status_url has no host")
    if parts.username or parts.password:
        raise UnsafeStatusURL("status_url must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeStatusURL(f"status_url port is invalid: {exc}") from exc
    addresses = await resolve(parts.hostname, port)
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not any(ip in net for net in allow):
            raise UnsafeStatusURL(
                f"status_url host {parts.hostname!r} resolves to {ip}, outside STATUSD_POLL_ALLOW_NETS"
            )
    return addresses
