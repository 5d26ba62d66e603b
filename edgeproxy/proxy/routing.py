"""Routing decisions of a proxy (RFC 3261 §16), sans-IO.

Route pre-processing, loop detection, where a URI sends a request, the
Record-Route we write, and nathelper-style Contact aliasing: all pure
functions over messages, so they are tested without sockets.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import zlib
from collections.abc import Callable
from typing import NamedTuple

from edgeproxy.config import TRANSPORTS
from edgeproxy.sip import Request
from edgeproxy.sip.destinations import default_port
from edgeproxy.sip.headers import shared_name_addr
from edgeproxy.sip.ids import random_hex, worker_mark
from edgeproxy.sip.uri import URI

BRANCH_PREFIX = "z9hG4bKep"
IsOurs = Callable[[URI], bool]


class Hop(NamedTuple):
    """Where to send: a transport and an address (host may still be a name); a
    NamedTuple, the cheapest record to build (one per forwarded message)."""

    transport: str
    host: str
    port: int


@functools.lru_cache(maxsize=4096)
def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def hop_for(uri: URI) -> Hop:
    """RFC 3263 in its IP-literal form: transport param (sips → TLS), maddr, port."""
    transport = uri.implied_transport
    if transport not in TRANSPORTS:
        transport = "udp"
    return Hop(transport, uri.destination, uri.port or default_port(transport))


def hop_of_source(source: str) -> Hop:
    """The Hop a stored source ("udp:203.0.113.5:40000", as bindings and
    subscriptions record where a request came from) names."""
    transport, _, rest = source.partition(":")
    ip, _, port = rest.rpartition(":")
    return Hop(transport, ip.strip("[]"), int(port))


def preprocess_routes(req: Request, is_ours: IsOurs) -> bool:
    """RFC 3261 §16.4. Returns True if a Route of ours was removed (the request
    follows a route set we recorded)."""
    removed = False
    if "route" in req.keys and is_ours(req.uri):
        # a strict router put our Record-Route value in the Request-URI
        last = req.values("Route")[-1]
        req.uri = shared_name_addr(last).uri_text
        _drop_last_route(req)
        removed = True
    return pop_own_routes(req, is_ours) or removed


def pop_own_routes(req: Request, is_ours: IsOurs) -> bool:
    """Remove the Route entries naming us from the top. Returns True if there was one."""
    removed = False
    while "route" in req.keys:
        top = shared_name_addr(req.first_value("Route") or "")
        if not is_ours(top.uri):
            break
        req.remove_first_value("Route")
        removed = True
        alias = top.uri.params.get(ALIAS)
        if alias and ALIAS not in req.uri.params:
            # our Path entry (RFC 3327) named where the client really is (Kamailio's
            # add_path_received): the Request-URI carries it on, like a Contact alias
            req.uri = f"{req.uri_text};{ALIAS}={alias}"
    return removed


def _drop_last_route(req: Request) -> None:
    values = req.values("Route")[:-1]
    req.remove("Route")
    for value in values:
        req.append("Route", value)


_LOOP_HASHED = ("proxy-require", "proxy-authorization", "route")


def loop_hash(req: Request) -> str:
    """RFC 3261 §16.6 step 8: what must differ for a request seen twice to be a spiral."""
    parts = [req.uri_text, req.from_.tag or "", req.to.tag or "", req.call_id, str(req.cseq.number)]
    keys = req.keys
    for name in _LOOP_HASHED:
        if name in keys:
            parts += req.get_lines(name)
    return f"{zlib.crc32('|'.join(parts).encode('utf-8', 'surrogateescape')):08x}"


def branch(hash_: str) -> str:
    """Our branch: magic cookie, our mark, the loop hash, then a unique part."""
    return f"{BRANCH_PREFIX}{hash_}.{random_hex(6)}{worker_mark()}"


def stateless_branch(req: Request) -> str:
    """A branch that is the same for every retransmission (RFC 3261 §16.11)."""
    key = f"{req.top_via.branch}|{req.uri_text}|{req.call_id}|{req.cseq}"
    return f"{BRANCH_PREFIX}sl{zlib.crc32(key.encode('utf-8', 'surrogateescape')):08x}"


def is_loop(req: Request, our_sent_by: set[str], hash_: str) -> bool:
    """A Via of ours carrying the same loop hash: the request came back unchanged (482)."""
    if not any(BRANCH_PREFIX.encode() in line for line in req.raw_lines("Via")):
        return False  # no Via of ours at all: the common case, decided without parsing
    for via in req.vias:
        b = via.branch or ""
        if via.sent_by.lower() in our_sent_by and b.startswith(BRANCH_PREFIX) and b[len(BRANCH_PREFIX):].split(".")[
                0] == hash_:
            return True
    return False


DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


def needs_record_route(req: Request) -> bool:
    return req.method in DIALOG_CREATING and req.to.tag is None


def our_uri(host: str, port: int, transport: str, user: str = "") -> str:
    """A SIP URI naming us on one transport: the port only when not the
    transport's default, `;transport=` only when not UDP."""
    port_part = "" if port == default_port(transport) else f":{port}"
    tparam = "" if transport == "udp" else f";transport={transport}"
    return f"sip:{user}{'@' if user else ''}{host}{port_part}{tparam}"


def record_route(host: str, port: int, transport: str, double: bool) -> str:
    """One Record-Route value for the given side of the proxy."""
    return f"<{our_uri(host, port, transport)};lr{';r2=on' if double else ''}>"


ALIAS = "alias"


def add_contact_alias(contact_uri: str, transport: str, ip: str, port: int) -> str:
    """nathelper's add_contact_alias: remember where the UA really is, in its Contact
    (or in our own Path entry: see preprocess_routes)."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"{contact_uri};{ALIAS}={host}~{port}~{_PROTO[transport]}"


def take_alias(req: Request) -> Hop | None:
    """nathelper's handle_ruri_alias: strip the alias from the Request-URI and
    return where it points."""
    uri = req.uri
    value = uri.params.get(ALIAS)
    if not value:
        return None
    parts = value.split("~")
    if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in _PROTO_BY_NUMBER:
        return None
    req.uri = dataclasses.replace(uri, params={k: v for k, v in uri.params.items() if k != ALIAS})
    return Hop(_PROTO_BY_NUMBER[parts[2]], parts[0].strip("[]"), int(parts[1]))


_PROTO = {"udp": "1", "tcp": "2", "tls": "3", "ws": "5", "wss": "6"}
_PROTO_BY_NUMBER = {v: k for k, v in _PROTO.items()}


def path(host: str, port: int, transport: str, client: Hop) -> str:
    """Our Path entry (RFC 3327) on a REGISTER passed upstream: any instance
    (`host` is the advertised name) takes the requests that come back through
    it, and the alias says where the client really is (behind NAT, or on a
    connection)."""
    uri = f"{our_uri(host, port, transport)};lr"
    return f"<{add_contact_alias(uri, client.transport, client.host, client.port)}>"
