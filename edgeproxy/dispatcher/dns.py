"""Locating SIP servers (RFC 3263): NAPTR → SRV → A/AAAA, with a TTL cache.

`resolve(uri)` gives the ordered list of hops to try. IP literals and
explicit ports skip the lookups RFC 3263 says they skip; SRV targets of
equal priority are ordered by a weighted random draw (RFC 2782). Answers,
negative ones included, are cached for their TTL (bounded in size).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import aiodns
from aiodns.error import DNSError

from edgeproxy.proxy.routing import Hop, is_ip
from edgeproxy.sip.destinations import default_port
from edgeproxy.sip.uri import URI

# NAPTR services we can use, and the transport each means
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls", "SIP+D2W": "ws", "SIPS+D2W": "wss"}
SRV_PREFIX = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp", "ws": "_sip._ws", "wss": "_sips._ws"}
NEGATIVE_TTL = 30.0
MAX_CACHE = 10_000


def literal_hop(uri: URI) -> Hop | None:
    """The hop of a URI that names an IP address (RFC 3263 looks nothing up for it),
    known at once; None for a name."""
    host = uri.destination
    if not is_ip(host):
        return None
    transport = uri.implied_transport
    return Hop(transport, host, uri.port or default_port(transport))


class SipResolver:
    def __init__(self, nameservers: list[str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.nameservers = nameservers or None
        self.clock = clock
        self._dns: aiodns.DNSResolver | None = None  # created on first use, inside the event loop
        self._cache: dict[tuple[str, str], tuple[float, list[Any]]] = {}

    async def resolve(self, uri: URI) -> list[Hop]:
        """Hops to try for a SIP URI, best first; empty when the name does not resolve."""
        hop = literal_hop(uri)
        if hop is not None:
            return [hop]
        host, transport, secure = uri.destination, uri.transport, uri.scheme == "sips"
        if uri.port is not None:  # a name with a port: only its addresses (RFC 3263 §4.2)
            return [Hop(uri.implied_transport, ip, uri.port) for ip in await self._addresses(host)]
        if transport is not None:
            hops = await self._srv(f"{SRV_PREFIX.get(transport, '_sip._udp')}.{host}", transport)
            return hops or [Hop(transport, ip, default_port(transport)) for ip in await self._addresses(host)]
        hops = await self._naptr(host, secure)
        if hops:
            return hops
        for t in (("tls",) if secure else ("udp", "tcp", "tls")):
            hops = await self._srv(f"{SRV_PREFIX[t]}.{host}", t)
            if hops:
                return hops
        t = "tls" if secure else "udp"
        return [Hop(t, ip, default_port(t)) for ip in await self._addresses(host)]

    async def _naptr(self, host: str, secure: bool) -> list[Hop]:
        records = [r for r in await self._query(host, "NAPTR")
                   if r.flags.lower() == "s" and r.service.upper() in NAPTR_SERVICES
                   and (not secure or r.service.upper().startswith("SIPS"))]
        hops: list[Hop] = []
        for record in sorted(records, key=lambda r: (r.order, r.preference)):
            hops += await self._srv(record.replacement, NAPTR_SERVICES[record.service.upper()])
        return hops

    async def _srv(self, name: str, transport: str) -> list[Hop]:
        hops: list[Hop] = []
        for record in _srv_order(await self._query(name, "SRV")):
            if record.target in ("", "."):
                continue
            hops += [Hop(transport, ip, record.port) for ip in await self._addresses(record.target)]
        return hops

    async def _addresses(self, host: str) -> list[str]:
        if is_ip(host):
            return [host]
        records = await self._query(host, "A") + await self._query(host, "AAAA")
        return [r.addr for r in records]

    async def _query(self, name: str, qtype: str) -> list[Any]:
        key = (name.lower().rstrip("."), qtype)
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        if self._dns is None:
            self._dns = aiodns.DNSResolver(nameservers=self.nameservers)
        try:
            result = await self._dns.query_dns(key[0], qtype)
            records = [a for a in result.answer if a.type == result.answer[0].type] if result.answer else []
            data = [a.data for a in records]
            ttl = min((a.ttl for a in records), default=NEGATIVE_TTL)
        except DNSError:
            data, ttl = [], NEGATIVE_TTL
        if len(self._cache) >= MAX_CACHE:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= MAX_CACHE:
                self._cache.clear()
        self._cache[key] = (now + max(ttl, 1), data)
        return data


def _srv_order(records: list[Any]) -> list[Any]:
    """RFC 2782: by priority, and within one priority a weighted random order."""
    out: list[Any] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                out += group
                break
            pick = random.uniform(0, total)
            for i, r in enumerate(group):
                pick -= r.weight
                if pick <= 0:
                    out.append(group.pop(i))
                    break
            else:
                out.append(group.pop())
    return out
