"""RFC 3263 resolution against a real (tiny) DNS server on loopback."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pytest

from edgeproxy.dispatcher.dns import SipResolver
from edgeproxy.proxy.routing import Hop
from edgeproxy.sip import parse_uri
from tests.dnsserver import DnsServer


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    server = DnsServer({
        ("example.com", "NAPTR"): [(20, 10, "S", "SIP+D2U", "", "_sip._udp.example.com"),
                                   (10, 10, "S", "SIP+D2T", "", "_sip._tcp.example.com"),
                                   (5, 10, "S", "X-UNKNOWN", "", "_x.example.com")],
        ("_sip._tcp.example.com", "SRV"): [(10, 1, 5070, "b1.example.com"), (20, 1, 5071, "b2.example.com")],
        ("_sip._udp.example.com", "SRV"): [(10, 3, 5080, "b1.example.com"), (10, 1, 5081, "b2.example.com")],
        ("srvonly.net", "A"): [("127.0.0.9",)],
        ("_sip._udp.srvonly.net", "SRV"): [(10, 1, 5090, "b2.example.com")],
        ("b1.example.com", "A"): [("127.0.0.5",)],
        ("b1.example.com", "AAAA"): [("::1",)],
        ("b2.example.com", "A"): [("127.0.0.6",)],
        ("plain.org", "A"): [("127.0.0.7",)],
    })
    yield server
    server.close()


async def test_naptr_then_srv_then_addresses(dns: DnsServer) -> None:
    resolver = SipResolver([f"127.0.0.1:{dns.port}"])
    hops = await resolver.resolve(parse_uri("sip:example.com"))
    # NAPTR order 10 (TCP) before 20 (UDP); SRV priority 10 before 20; A before AAAA
    assert hops[:3] == [Hop("tcp", "127.0.0.5", 5070), Hop("tcp", "::1", 5070), Hop("tcp", "127.0.0.6", 5071)]
    assert {h.transport for h in hops[3:]} == {"udp"}


async def test_srv_weights_spread_and_cache(dns: DnsServer) -> None:
    resolver = SipResolver([f"127.0.0.1:{dns.port}"])
    firsts = collections.Counter()
    for _ in range(200):
        resolver._cache.pop(("_sip._udp.example.com", "SRV"), None)
        firsts[(await resolver.resolve(parse_uri("sip:example.com;transport=udp")))[0].port] += 1
    assert 110 < firsts[5080] < 190 and firsts[5081] > 10  # weights 3:1
    before = len(dns.queries)
    await resolver.resolve(parse_uri("sip:example.com;transport=udp"))
    assert len(dns.queries) == before  # served from the TTL cache


async def test_explicit_port_and_ip_skip_lookups(dns: DnsServer) -> None:
    resolver = SipResolver([f"127.0.0.1:{dns.port}"])
    assert await resolver.resolve(parse_uri("sip:127.0.0.1:5099")) == [Hop("udp", "127.0.0.1", 5099)]
    assert await resolver.resolve(parse_uri("sips:[::1]")) == [Hop("tls", "::1", 5061)]
    assert await resolver.resolve(parse_uri("sip:plain.org:5062;transport=tcp")) == [Hop("tcp", "127.0.0.7", 5062)]
    assert ("plain.org", "NAPTR") not in dns.queries  # an explicit port means A/AAAA only


async def test_fallbacks_srv_without_naptr_then_a_record(dns: DnsServer) -> None:
    resolver = SipResolver([f"127.0.0.1:{dns.port}"])
    assert (await resolver.resolve(parse_uri("sip:srvonly.net")))[0] == Hop("udp", "127.0.0.6", 5090)
    assert await resolver.resolve(parse_uri("sip:plain.org")) == [Hop("udp", "127.0.0.7", 5060)]
    assert await resolver.resolve(parse_uri("sip:nowhere.invalid")) == []
