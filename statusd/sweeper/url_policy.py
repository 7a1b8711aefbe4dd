"""status_url policy: the platform registers it, statusd fetches it, so it is an SSRF risk.

Only http/https, never a cloud metadata endpoint (statusd.sweeper.metadata_endpoints), only to
addresses inside STATUSD_POLL_ALLOW_NETS, checked after DNS resolution
(a hostname that resolves to a forbidden address is refused, whatever its name looks like). The
poller re-checks the resolved address at poll time too (DNS can change after registration).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from statusd.errors import UnsafeStatusURL
from statusd.sweeper.metadata_endpoints import Network as Network
from statusd.sweeper.metadata_endpoints import metadata_endpoint, named_exactly

MAX_URL_LENGTH = 2048
MAX_HOSTNAME_LENGTH = 253  # RFC 1035: 255 octets on the wire, 253 as text without the root dot
_LABEL_RE = re.compile(r"[A-Za-z0-9_-]{1,63}")  # RFC 1035 labels (underscore: internal names)


async def resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeStatusURL(f"status_url host {host!r} does not resolve: {exc.strerror}") from exc
    except (UnicodeError, ValueError) as exc:  # the idna codec on names check_syntax let through
        raise UnsafeStatusURL(f"status_url host {host!r} is not a valid host name") from exc
    return sorted({str(info[4][0]) for info in infos})


def refusal(address: str, allow: Sequence[Network]) -> str | None:
    """Why an IP address (zone id stripped) must not be polled, or None when it may be.

    Cloud metadata services are refused first, whatever network of the allow-list contains them,
    unless the allow-list names the address itself (statusd.sweeper.metadata_endpoints)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    what = metadata_endpoint(ip)
    if what is not None and not named_exactly(ip, allow):
        return (
            f"{ip}, a cloud metadata endpoint ({what}); refused unless STATUSD_POLL_ALLOW_NETS "
            f"names it exactly ({ip}/{ip.max_prefixlen})"
        )
    if not any(ip in net for net in allow):
        return f"{ip}, outside STATUSD_POLL_ALLOW_NETS"
    return None


def allowed(address: str, allow: Sequence[Network]) -> bool:
    """True when the poller may connect to this IP address (see `refusal`)."""
    return refusal(address, allow) is None


def _literal_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        return None


def _check_host_name(host: str) -> None:
    """A DNS name the resolver can take: IDNA-encodable, labels of 1-63, at most 253 octets.

    Without this, getaddrinfo raises UnicodeError (a 64-octet label) instead of answering."""
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeStatusURL(f"status_url host {host[:80]!r} is not a valid host name") from None
    name = ascii_host[:-1] if ascii_host.endswith(".") else ascii_host
    if len(name) > MAX_HOSTNAME_LENGTH:
        raise UnsafeStatusURL(f"status_url host is longer than {MAX_HOSTNAME_LENGTH} characters")
    for label in name.split("."):
        if not _LABEL_RE.fullmatch(label):
            raise UnsafeStatusURL(
                f"status_url host {host[:80]!r} has an invalid label {label[:80]!r} "
                "(1-63 characters of A-Z a-z 0-9 - _)"
            )


def _split(url: str) -> tuple[SplitResult, str, int]:
    """(parts, host, port); UnsafeStatusURL for anything urlsplit cannot take apart."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", a port out of range or not a number
        raise UnsafeStatusURL(f"status_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeStatusURL(
            f"status_url scheme must be http or https, not {parts.scheme or 'missing'!r}"
        )
    if not host:
        raise UnsafeStatusURL("status_url has no host")
    return parts, host, port or (443 if parts.scheme == "https" else 80)


def check_syntax(url: str, allow: Sequence[Network]) -> tuple[str, int]:
    """Checks that need no DNS (scheme, host, credentials, port, an IP-literal host's network).

    Returns (host, port). The poller runs this before every request; for host names the
    AllowListResolver below checks the address actually connected to."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeStatusURL(f"status_url is longer than {MAX_URL_LENGTH} characters")
    parts, host, port = _split(url)
    if parts.username or parts.password:
        raise UnsafeStatusURL("status_url must not carry credentials")
    literal = _literal_ip(host)
    if "[" in parts.netloc:  # bracketed: RFC 3986 allows only an IPv6 address there
        if literal is None or ":" not in literal:
            raise UnsafeStatusURL(f"status_url host [{host[:80]}] is not an IPv6 address")
    elif literal is None:
        _check_host_name(host)
    if literal is not None and (why := refusal(literal, allow)) is not None:
        raise UnsafeStatusURL(f"status_url address {why}")
    return host, port


async def check_status_url(url: str, allow: Sequence[Network]) -> list[str]:
    """Return the resolved addresses of a safe status_url; raise UnsafeStatusURL naming the problem.

    Every address the name resolves to must be allowed: a name with one private and one public
    address is refused, since the client may connect to either."""
    host, port = check_syntax(url, allow)
    addresses = await resolve(host, port)
    for address in addresses:
        if (why := refusal(address, allow)) is not None:
            raise UnsafeStatusURL(f"status_url host {host!r} resolves to {why}")
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
            if (why := refusal(result["host"], self._allow)) is not None:
                raise UnsafeStatusURL(f"status_url host {host!r} resolves to {why}")
        return results

    async def close(self) -> None:
        await self._inner.close()
