"""Proxy routing decisions (RFC 3261 §16.4, §16.6; RFC 5658; nathelper aliasing), as pure functions."""

from __future__ import annotations

from edgeproxy.proxy import routing
from edgeproxy.sip import Request, parse_message, validate
from edgeproxy.sip.uri import URI


def request(uri: str = "sip:bob@example.com", routes: tuple[str, ...] = (), method: str = "INVITE",
            to_tag: str = "", vias: tuple[str, ...] = ("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1",)) -> Request:
    lines = [f"{method} {uri} SIP/2.0", *(f"Via: {v}" for v in vias), "Max-Forwards: 70",
             "From: <sip:alice@example.com>;tag=a", f"To: <sip:bob@example.com>{to_tag}", "Call-ID: c1",
             f"CSeq: 1 {method}", *(f"Route: {r}" for r in routes), "Contact: <sip:alice@10.0.0.9:5060>"]
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    validate(msg)
    return msg


def ours(uri: URI) -> bool:
    return uri.host == "edge.example.com" or (uri.host == "127.0.0.1" and uri.port in (None, 5060))


def test_loose_routing_removes_our_routes_only() -> None:
    req = request(routes=("<sip:edge.example.com;lr>", "<sip:127.0.0.1;lr;r2=on>", "<sip:other.net;lr>"))
    assert routing.preprocess_routes(req, ours)
    assert req.values("Route") == ["<sip:other.net;lr>"] and req.uri_text == "sip:bob@example.com"
    untouched = request(routes=("<sip:other.net;lr>",))
    assert not routing.preprocess_routes(untouched, ours) and untouched.values("Route") == ["<sip:other.net;lr>"]


def test_strict_router_compatibility() -> None:
    # a strict router upstream put our Record-Route value in the Request-URI and the target last in Route
    req = request(uri="sip:edge.example.com;lr", routes=("<sip:next.net;lr>", "<sip:bob@10.0.0.5:5070>"))
    assert routing.preprocess_routes(req, ours)
    assert req.uri_text == "sip:bob@10.0.0.5:5070" and req.values("Route") == ["<sip:next.net;lr>"]


def test_hop_for_uri() -> None:
    from edgeproxy.sip import parse_uri

    assert routing.hop_for(parse_uri("sip:10.0.0.1")) == routing.Hop("udp", "10.0.0.1", 5060)
    assert routing.hop_for(parse_uri("sip:h:5080;transport=TCP")) == routing.Hop("tcp", "h", 5080)
    assert routing.hop_for(parse_uri("sips:h")) == routing.Hop("tls", "h", 5061)
    assert routing.hop_for(parse_uri("sip:[2001:db8::1]:5062")) == routing.Hop("udp", "2001:db8::1", 5062)
    assert routing.hop_for(parse_uri("sip:bob@h;maddr=10.9.9.9")).host == "10.9.9.9"


def test_loop_detection_versus_spiral() -> None:
    first = request()
    h = routing.loop_hash(first)
    ours_via = f"SIP/2.0/UDP 127.0.0.1:5060;branch={routing.branch(h)}"
    looped = request(vias=(ours_via, "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1"))
    assert routing.is_loop(looped, {"127.0.0.1:5060"}, routing.loop_hash(looped))
    spiral = request(uri="sip:bob@10.0.0.5", vias=(ours_via, "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1"))
    assert not routing.is_loop(spiral, {"127.0.0.1:5060"}, routing.loop_hash(spiral))  # R-URI changed: a spiral
    assert not routing.is_loop(first, {"127.0.0.1:5060"}, h)


def test_branches() -> None:
    h = routing.loop_hash(request())
    a, b = routing.branch(h), routing.branch(h)
    assert a != b and a.startswith("z9hG4bK") and h in a
    assert routing.stateless_branch(request()) == routing.stateless_branch(request())  # same for retransmissions


def test_record_route_and_double_record_route() -> None:
    assert routing.record_route("edge.example.com", 5060, "udp", False) == "<sip:edge.example.com;lr>"
    assert routing.record_route("edge.example.com", 5070, "tcp", True) == "<sip:edge.example.com:5070;transport=tcp;lr;r2=on>"
    assert routing.needs_record_route(request())
    assert not routing.needs_record_route(request(to_tag=";tag=x"))  # in-dialog
    assert not routing.needs_record_route(request(method="OPTIONS"))


def test_contact_alias_round_trip() -> None:
    aliased = routing.add_contact_alias("sip:alice@10.0.0.9:5060", "udp", "203.0.113.7", 40123)
    req = request(uri=aliased)
    hop = routing.take_alias(req)
    assert hop == routing.Hop("udp", "203.0.113.7", 40123)
    assert req.uri_text == "sip:alice@10.0.0.9:5060"  # the UA sees its own Contact again
    assert routing.take_alias(request()) is None
