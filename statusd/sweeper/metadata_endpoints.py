"""Cloud instance-metadata addresses: never a poll target unless an operator names one exactly.

A metadata service hands out the node's cloud credentials to whoever asks from the node, so a
status_url pointing at one turns the poller into a credential thief's proxy. Some of them sit
inside ranges an allow-list naturally contains (AWS's IPv6 IMDS fd00:ec2::254 is in fc00::/7),
so this list is checked before STATUSD_POLL_ALLOW_NETS; only an exact /32 or /128 entry there
for the address itself lets it through (a network that merely contains it does not).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix embeds an IPv4 address

METADATA_ENDPOINTS: Mapping[IPAddress, str] = {
    ipaddress.ip_address(address): what
    for address, what in (
        (
            "169.254.169.254",
            "instance metadata of AWS, GCP, Azure, Oracle, DigitalOcean, Hetzner, IBM, OpenStack",
        ),
        ("fd00:ec2::254", "AWS instance metadata, IPv6"),
        ("169.254.170.2", "AWS ECS task metadata and credentials"),
        ("169.254.170.23", "AWS EKS Pod Identity credentials"),
        ("fd00:ec2::23", "AWS EKS Pod Identity credentials, IPv6"),
        ("fd20:ce::254", "GCP metadata server, IPv6"),
        ("168.63.129.16", "Azure WireServer (host agent)"),
        ("100.100.100.200", "Alibaba Cloud instance metadata"),
        ("169.254.0.23", "Tencent Cloud instance metadata"),
        ("192.0.0.192", "Oracle Cloud Classic instance metadata"),
        ("fe80::a9fe:a9fe", "OpenStack instance metadata, IPv6"),
    )
}


def embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d) or NAT64 IPv6 address, else `ip`."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def metadata_endpoint(ip: IPAddress) -> str | None:
    """What metadata service `ip` is (in any IPv6 spelling of an IPv4 one), or None."""
    return METADATA_ENDPOINTS.get(ip) or METADATA_ENDPOINTS.get(embedded_ipv4(ip))


def named_exactly(ip: IPAddress, allow: Sequence[Network]) -> bool:
    """True when the allow-list holds `ip` itself as a /32 or /128 entry (an operator's decision)."""
    return any(net.prefixlen == net.max_prefixlen and net.network_address == ip for net in allow)
