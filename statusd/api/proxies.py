"""Did this request reach us over HTTPS? Directly (TLS socket) or through a trusted proxy.

X-Forwarded-Proto is believed only from a peer inside STATUSD_TRUSTED_PROXIES (default: none),
since any client can send the header. A proxy that appends to the header puts its own view last,
and anything before it came from the client, so the last value is the one that counts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def from_trusted_proxy(request: web.Request, trusted: Sequence[Network]) -> bool:
    """True when the TCP peer of this request is one of the trusted proxies."""
    if not trusted or not request.remote:
        return False
    try:
        peer = ipaddress.ip_address(request.remote.split("%", 1)[0])
    except ValueError:  # a unix socket peer, or something else that is not an address
        return False
    return any(peer in net for net in trusted)


def came_over_https(request: web.Request, trusted: Sequence[Network]) -> bool:
    """True for a TLS connection, or `X-Forwarded-Proto: https` from a trusted proxy."""
    if request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto")
    if not forwarded or not from_trusted_proxy(request, trusted):
        return False
    return forwarded.rsplit(",", 1)[-1].strip().lower() == "https"


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None


def client_address(request: web.Request, trusted: Sequence[Network]) -> str | None:
    """The calling client's address: the TCP peer, or, when the peer is a trusted proxy, the
    nearest X-Forwarded-For hop that is not one (proxies append, so the right end is theirs and
    anything left of the first untrusted hop could have been written by the client)."""
    peer = request.remote
    forwarded = request.headers.get("X-Forwarded-For")
    if not forwarded or not from_trusted_proxy(request, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer  # garbage in the header: believe only what we saw
        if not any(address in net for net in trusted):
            return str(address)
    return str(_address(hops[0])) if hops else peer
