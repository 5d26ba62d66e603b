"""Where a response goes (RFC 3261 §18.2.2 with RFC 3581 rport)."""

from __future__ import annotations

import functools
import ipaddress

from .headers import Via
from .message import Request

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "sctp": 5060, "tls": 5061, "ws": 80, "wss": 443}


def default_port(transport: str) -> int:
    """The port a transport means when none is written (RFC 3261 §19.1.2, RFC 7118)."""
    return DEFAULT_PORTS.get(transport.lower(), 5060)


@functools.lru_cache(maxsize=4096)
def is_unicast_target(host: str) -> bool:
    """False for addresses a response must never be sent to (broadcast,
    multicast, unspecified); names are resolved later and allowed here."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True
    if ip.is_multicast or ip.is_unspecified:
        return False
    return not (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"))


def response_address(via: Via) -> tuple[str, int] | None:
    """Host and port for a response over an unreliable transport, or None to drop.

    `received` (set by the server that took the request) wins over sent-by,
    and `rport` with a value over the sent-by port. maddr is not honoured:
    responses are never multicast from an edge proxy.
    """
    host = via.received or via.host
    port = via.rport or via.port or default_port(via.transport)
    if not is_unicast_target(host):
        return None
    return host.strip("[]"), port



def stamp_received(req: Request, source_ip: str, source_port: int) -> None:
    """RFC 3261 §18.2.1 and RFC 3581: record on the top Via where the request
    really came from, so responses find their way back through NAT."""
    via = req.top_via
    source = f"[{source_ip}]" if ":" in source_ip else source_ip
    # a `received` the sender wrote itself is overwritten: it must not choose where we reply
    stated = via.params.get("received")
    received = None if via.host.strip("[]") == source_ip and stated in (None, source) else source
    rport = str(source_port) if via.has_rport and via.rport is None else None
    if received is None and rport is None:
        return
    if received is not None:
        via.params["received"] = received
    if rport is not None:
        via.params["rport"] = rport
    req.set_top_via(via)
