"""Property tests: round trips are stable and bad bytes only ever raise SipError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.samples import INVITE, OK_200, REGISTER
from edgeproxy.sip import Request, Response, SipError, StreamFramer, parse_message, validate
from edgeproxy.sip.destinations import response_address
from tests.conftest import CONFORMANCE

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){1,2}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
ports = st.one_of(st.none(), st.integers(1, 65535))
uri_tokens = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()", min_size=1, max_size=10)
users = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/", min_size=1, max_size=12)


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    user = draw(st.one_of(st.none(), users))
    port = draw(ports)
    host = draw(hosts)
    params = draw(st.lists(st.tuples(uri_tokens, st.one_of(st.none(), uri_tokens)), max_size=3))
    text = "sip:" + (f"{user}@" if user else "") + host + (f":{port}" if port else "")
    return text + "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "SUBSCRIBE", "BYE", "NOTIFY", "FOO"]))
    display = draw(st.one_of(st.just(""), tokens.map(lambda t: f'"{t} x\\"y" '), tokens.map(lambda t: t + " ")))
    body = draw(st.binary(max_size=64))
    extra = draw(st.lists(st.tuples(tokens.map(lambda t: "X-" + t), st.text(TOKEN_CHARS + " ,;=<>:", max_size=20)),
                          max_size=4))
    lines = [
        f"{method} {draw(sip_uris())} SIP/2.0",
        (f"Via: SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS', 'WS']))} {draw(hosts)}"
         f";branch=z9hG4bK{draw(tokens)};rport"),
        f"Max-Forwards: {draw(st.integers(0, 255))}",
        f"From: {display}<{draw(sip_uris())}>;tag={draw(tokens)}",
        f"t: <{draw(sip_uris())}>",
        f"Call-ID: {draw(tokens)}@{draw(hosts)}",
        f"CSeq: {draw(st.integers(0, 2**31 - 1))} {method}",
        f"Contact: <{draw(sip_uris())}>;expires={draw(st.integers(0, 3600))}, <{draw(sip_uris())}>",
    ] + [f"{k}: {v.strip()}" for k, v in extra]
    head = "\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def exercise(data: bytes) -> None:
    """Everything a server may touch; only SipError may come out."""
    msg = parse_message(data)
    validate(msg)
    _ = (msg.vias, msg.contacts, msg.routes, msg.record_routes, msg.expires, msg.event, msg.to_bytes())
    for na in msg.contacts + [msg.from_, msg.to]:
        _ = na.uri
    if isinstance(msg, Response):
        response_address(msg.top_via)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_generated_requests_round_trip(data: bytes) -> None:
    msg = parse_message(data)
    validate(msg)
    assert isinstance(msg, Request)
    assert msg.to_bytes() == data
    again = parse_message(msg.to_bytes())
    assert isinstance(again, Request)
    validate(again)
    assert (again.method, again.uri_text, again.call_id, str(again.cseq), again.body) == (
        msg.method, msg.uri_text, msg.call_id, str(msg.cseq), msg.body)
    assert [str(v) for v in again.vias] == [str(v) for v in msg.vias]
    assert [str(c.uri) for c in again.contacts] == [str(c.uri) for c in msg.contacts]
    # a modified message re-parses to what was written
    msg.insert("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx")
    msg.set("Max-Forwards", "7")
    third = parse_message(msg.to_bytes())
    assert third.max_forwards == 7 and third.top_via.branch == "z9hG4bKx" and len(third.vias) == 2


def _valid_corpus() -> list[bytes]:
    corpus = [INVITE, REGISTER, OK_200]
    manifest = CONFORMANCE / "manifest.tsv"
    if manifest.exists():
        for line in manifest.read_text().splitlines()[1:]:
            name, _, _kind, expected, _ = line.split("\t")
            if expected == "process":
                corpus.append((CONFORMANCE / name).read_bytes())
    return corpus


VALID = _valid_corpus()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "special"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b":", b";", b",", b'"', b"<", b">", b"\\", b" ", b"%",
                                                  b"\r\n ", b"[", b"]", b"@", b"=", b"\x00", b"\xff"]))
    return bytes(data)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mutated())
def test_mutations_only_raise_sip_error(data: bytes) -> None:
    try:
        exercise(data)
    except SipError as err:
        assert 400 <= err.status < 600


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([INVITE, REGISTER, OK_200, b"\r\n\r\n"]), min_size=1, max_size=6),
       st.lists(st.integers(1, 300), min_size=1, max_size=20))
def test_framer_is_independent_of_segmentation(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(messages)
    framer = StreamFramer()
    frames: list[bytes] = []
    pos = 0
    for size in cuts * (len(stream) // max(sum(cuts), 1) + 1):
        frames += framer.feed(stream[pos : pos + size])
        pos += size
        if pos >= len(stream):
            break
    frames += framer.feed(stream[pos:])
    assert frames == messages
