"""Cloud metadata services are refused at registration and at poll time, whatever the allow-list
holds, unless an operator names the exact address (/32 or /128) in STATUSD_POLL_ALLOW_NETS."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import pytest

from statusd.errors import UnsafeStatusURL
from statusd.lifecycle import Kind
from statusd.settings import DEFAULT_POLL_ALLOW_NETS, Settings
from statusd.sweeper.poller import poll_one, poll_session
from statusd.sweeper.url_policy import AllowListResolver, check_status_url
from tests.support.api_client import api_client

DEFAULT = [ipaddress.ip_network(n) for n in DEFAULT_POLL_ALLOW_NETS]
EVERYTHING = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]

METADATA_URLS = [
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS IPv6 IMDS: inside the default fc00::/7
    "http://[fd00:ec2::23]/",  # EKS Pod Identity, IPv6: inside fc00::/7 too
    "http://[fd20:ce::254]/computeMetadata/v1/",  # GCP, IPv6: inside fc00::/7 too
    "http://169.254.169.254/latest/meta-data/",  # AWS, GCP, Azure, Oracle, DigitalOcean...
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "http://100.100.100.200/latest/meta-data/",  # Alibaba
    "http://168.63.129.16/",  # Azure WireServer
    "http://[::ffff:169.254.169.254]/",  # the IPv4 one, IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",  # same, hex spelling
    "http://[64:ff9b::a9fe:a9fe]/",  # same, through NAT64
]


@pytest.mark.parametrize("url", METADATA_URLS)
@pytest.mark.parametrize("allow", [DEFAULT, EVERYTHING], ids=["default", "everything"])
async def test_metadata_url_is_refused_whatever_the_networks_allow(
    url: str, allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> None:
    with pytest.raises(UnsafeStatusURL, match="cloud metadata endpoint"):
        await check_status_url(url, allow)


async def test_an_exact_entry_lets_one_address_through_and_nothing_else() -> None:
    named = [*DEFAULT, ipaddress.ip_network("fd00:ec2::254/128")]
    assert await check_status_url("http://[fd00:ec2::254]/latest/", named) == ["fd00:ec2::254"]
    with pytest.raises(UnsafeStatusURL, match="cloud metadata endpoint"):
        await check_status_url("http://[fd20:ce::254]/", named)  # another one stays refused
    v4 = [ipaddress.ip_network("169.254.169.254/32")]
    assert await check_status_url("http://169.254.169.254/latest/", v4) == ["169.254.169.254"]
    wide = [ipaddress.ip_network("169.254.0.0/16")]  # a network containing it is not a decision
    with pytest.raises(UnsafeStatusURL, match="names it exactly"):
        await check_status_url("http://169.254.169.254/latest/", wide)


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200"])
async def test_poll_time_resolver_refuses_metadata_addresses(address: str) -> None:
    """The resolver the poller connects through re-checks every address (rebinding, stored URLs)."""
    resolver = AllowListResolver(EVERYTHING)
    try:
        with pytest.raises(UnsafeStatusURL, match="cloud metadata endpoint"):
            await resolver.resolve(address, 80, socket.AF_UNSPEC)  # as the connector asks
        assert (await resolver.resolve("127.0.0.1", 80))[0]["host"] == "127.0.0.1"
    finally:
        await resolver.close()


@pytest.mark.parametrize("url", METADATA_URLS[:3])
async def test_a_stored_metadata_url_is_blocked_at_poll_time_without_connecting(url: str) -> None:
    """A URL registered before this rule (or by an older statusd) is never fetched."""
    async with poll_session(DEFAULT, 4) as session:
        answer = await poll_one(
            session, url, Kind.TRAINING, allow=DEFAULT, timeout_s=2.0, max_bytes=1024
        )
    assert answer.outcome == "blocked", answer
    assert answer.error is not None and "cloud metadata endpoint" in answer.error


async def test_registration_refuses_metadata_and_accepts_an_operators_exact_entry(
    make_settings: Callable[..., Settings],
) -> None:
    body = {"id": "imds", "kind": "training", "status_url": "http://[fd00:ec2::254]/latest/"}
    async with api_client(make_settings()) as client:
        resp = await client.post("/v1/workloads", json=body)
        doc = await resp.json()
        assert resp.status == 422 and doc["error"] == "unsafe_status_url", doc
        assert doc["field"] == "status_url" and "fd00:ec2::254/128" in doc["message"], doc
        assert (await client.get("/v1/workloads/imds")).status == 404
    named = [*DEFAULT_POLL_ALLOW_NETS, "fd00:ec2::254/128"]
    async with api_client(make_settings(poll_allow_nets=named)) as client:
        assert (await client.post("/v1/workloads", json=body)).status == 201
