import pytest

from benchmarks.samples import INVITE, OK_200, REGISTER
from edgeproxy.sip import (
    Limits,
    Request,
    Response,
    SipError,
    check_forwardable,
    decrement_max_forwards,
    error_response,
    make_response,
    parse_message,
    validate,
)


def parse_request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    validate(msg)
    return msg


def test_untouched_message_serialises_to_the_same_bytes() -> None:
    for data in (INVITE, REGISTER, OK_200):
        assert parse_message(data).to_bytes() == data


def test_indexed_headers() -> None:
    req = parse_request(INVITE)
    assert req.method == "INVITE" and req.uri.user == "bob"
    assert req.call_id == "9f8e7d6c5b4a39281706@192.0.2.10"
    assert (req.cseq.number, req.cseq.method) == (1, "INVITE")
    assert req.from_.tag == "7a3c2f01" and req.to.tag is None
    assert req.max_forwards == 70 and req.top_via.branch == "z9hG4bK-524287-1---5e4b1a1f8b5c"
    assert req.contacts[0].uri.host == "192.0.2.10"
    assert req.get("content-type") == "application/sdp" and req.body.startswith(b"v=0")
    assert req.get("X-Not-There") is None


def test_compact_and_folded_headers_read_like_long_ones() -> None:
    data = (b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:c@d>;tag=1\r\n"
            b"t: <sip:a@b>\r\ni: x@y\r\nCSEQ: 1\r\n OPTIONS\r\nm: <sip:c@h>\r\nl: 0\r\n\r\n")
    req = parse_request(data)
    assert req.cseq.method == "OPTIONS" and req.contacts[0].uri.host == "h" and req.call_id == "x@y"
    assert req.to_bytes() == data


def test_forwarding_edits_only_what_changes() -> None:
    req = parse_request(INVITE)
    decrement_max_forwards(req)
    req.insert("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKedge")
    req.insert("Record-Route", "<sip:edge.example.com;lr>")
    out = req.to_bytes()
    assert out.startswith(b"INVITE sip:bob@example.com SIP/2.0\r\nRecord-Route: <sip:edge.example.com;lr>\r\n"
                          b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKedge\r\nVia: SIP/2.0/UDP 192.0.2.10")
    assert b"Max-Forwards: 69\r\n" in out
    again = parse_request(out)
    assert [v.branch for v in again.vias] == ["z9hG4bKedge", "z9hG4bK-524287-1---5e4b1a1f8b5c"]
    assert out.replace(b"Max-Forwards: 69", b"Max-Forwards: 70").endswith(INVITE[INVITE.index(b"Via:"):])


def test_max_forwards_rules() -> None:
    req = parse_request(INVITE.replace(b"Max-Forwards: 70\r\n", b""))
    decrement_max_forwards(req)
    assert req.max_forwards == 70  # RFC 3261 16.6 step 3: added as 70
    zero = parse_request(INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
    with pytest.raises(SipError) as info:
        check_forwardable(zero)  # before forwarding (and before proxy authorization)
    assert info.value.status == 483


def test_response_forwarding_removes_the_top_via_value() -> None:
    resp = parse_message(OK_200.replace(b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKep.1a2b3c4d.0;rport=5060\r\nVia: ",
                                        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKep.1a2b3c4d.0;rport=5060, "))
    resp.remove_first_value("Via")
    assert [v.host for v in resp.vias] == ["192.0.2.10"]
    assert resp.raw_lines("Via") == [b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---5e4b1a1f8b5c;rport=5060;received=192.0.2.10"]
    resp.remove_first_value("Via")  # a line with one value goes
    assert not resp.has("Via")
    quoted = parse_message(OK_200.replace(b";rport=5060\r\n", b';rport=5060;x="a,b"\r\n', 1))
    quoted.remove_first_value("Via")  # its comma is quoted: one value, the line goes (no empty Via left)
    assert [v.host for v in quoted.vias] == ["192.0.2.10"]
    assert isinstance(resp, Response) and resp.status == 200 and resp.reason == "OK"


def test_set_append_remove() -> None:
    req = parse_request(INVITE)
    req.set("Contact", "<sip:new@host>")
    assert req.get_lines("m") == ["<sip:new@host>"]
    req.append("Route", "<sip:r1;lr>")
    req.append("Route", "<sip:r2;lr>")
    assert [r.uri.host for r in req.routes] == ["r1", "r2"]
    req.remove_first_value("Route")
    assert req.get_lines("Route") == ["<sip:r2;lr>"]
    req.remove("Route")
    assert not req.has("Route")
    req.set_body(b"hello", "text/plain")
    reparsed = parse_request(req.to_bytes())
    assert reparsed.body == b"hello" and reparsed.get("Content-Type") == "text/plain"


def test_request_uri_rewrite() -> None:
    req = parse_request(INVITE)
    req.uri = "sip:bob@192.0.2.20:5060"
    assert req.to_bytes().startswith(b"INVITE sip:bob@192.0.2.20:5060 SIP/2.0\r\n")
    assert req.uri.port == 5060


def test_make_response_copies_identifiers_and_adds_to_tag() -> None:
    req = parse_request(INVITE)
    resp = make_response(req, 180, to_tag="abc", headers=[("Contact", "<sip:bob@10.0.0.2>")])
    assert resp.raw_lines("Via") == req.raw_lines("Via")
    assert resp.raw_lines("From") == req.raw_lines("From") and resp.call_id == req.call_id
    assert resp.to.tag == "abc" and resp.reason == "Ringing" and resp.get("Content-Length") == "0"
    trying = make_response(parse_request(INVITE.replace(b"CSeq: 1 INVITE\r\n", b"CSeq: 1 INVITE\r\nTimestamp: 54\r\n")), 100)
    assert trying.to.tag is None and trying.get("Timestamp") == "54"
    tagged = make_response(parse_request(INVITE.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=x")), 200)
    assert tagged.to.tag == "x"
    assert parse_message(resp.to_bytes()).to_bytes() == resp.to_bytes()


def test_no_response_to_ack_or_without_via() -> None:
    ack = parse_message(INVITE.replace(b"INVITE", b"ACK"))
    assert error_response(SipError(400, "x"), ack) is None  # type: ignore[arg-type]


def test_build_request() -> None:
    req = Request.build("OPTIONS", "sip:10.0.0.11:5060", [("Via", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1"),
                        ("From", "<sip:edge@x>;tag=1"), ("To", "<sip:10.0.0.11>"), ("Call-ID", "c1"),
                        ("CSeq", "1 OPTIONS"), ("Max-Forwards", "70")])
    again = parse_request(req.to_bytes())
    assert again.get("Content-Length") == "0" and again.uri.port == 5060


def test_limits() -> None:
    small = Limits(max_message=400, max_headers=10, max_line=100)
    with pytest.raises(SipError) as info:
        parse_message(INVITE, small)
    assert info.value.status == 513
    many = INVITE.replace(b"CSeq: 1 INVITE\r\n", b"CSeq: 1 INVITE\r\n" + b"X-A: 1\r\n" * 20)
    with pytest.raises(SipError) as info:
        parse_message(many, Limits(max_headers=20))
    assert info.value.reason == "Too Many Headers"
    long_line = INVITE.replace(b"User-Agent: Z", b"User-Agent: " + b"Z" * 200)
    with pytest.raises(SipError) as info:
        parse_message(long_line, Limits(max_line=100))
    assert info.value.reason == "Header Line Too Long"


@pytest.mark.parametrize(
    "data,status",
    [
        (INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505),
        (INVITE.replace(b"Content-Length: 253", b"Content-Length: 9999"), 400),
        (INVITE.replace(b"Content-Length: 253", b"Content-Length: abc"), 400),
        (INVITE.replace(b"Call-ID: ", b"Call-ID : "), None),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400),
        (INVITE.replace(b"To: <sip:bob@example.com>\r\n", b""), 400),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400),
        (INVITE.replace(b"Allow:", b"Allow"), 400),
        (INVITE.replace(b"INVITE sip:bob@example.com", b"INVITE nobodyknows:bob"), 416),
    ],
)
def test_request_errors_carry_status_and_message(data: bytes, status: int | None) -> None:
    try:
        validate(parse_message(data))
    except SipError as err:
        assert err.status == status
        assert isinstance(err.message, Request)
        resp = error_response(err)
        assert resp is not None and resp.status == status
    else:
        assert status is None


def test_lf_only_line_endings_are_accepted() -> None:
    req = parse_request(REGISTER.replace(b"\r\n", b"\n"))
    assert req.method == "REGISTER" and req.expires == 60


@pytest.mark.parametrize(
    "via,expected",
    [
        (b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport",
         b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport=40000;received=192.0.2.9"),
        (b"SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKx",
         b"SIP/2.0/UDP 10.0.0.1:5060;rport=40000;branch=z9hG4bKx;received=192.0.2.9"),
        (b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx", b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx;received=192.0.2.9"),
        (b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx;rport, SIP/2.0/UDP h2;branch=b2",
         b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx;rport=40000;received=192.0.2.9, SIP/2.0/UDP h2;branch=b2"),
        (b"SIP/2.0/UDP 192.0.2.9:5060;rport=5000;branch=z9hG4bKx", b"SIP/2.0/UDP 192.0.2.9:5060;rport=5000;branch=z9hG4bKx"),
        (b"SIP/2.0/UDP 192.0.2.9:5060;RPORT;branch=z9hG4bKx",
         b"SIP/2.0/UDP 192.0.2.9:5060;rport=40000;branch=z9hG4bKx"),
        # a received the sender wrote itself does not choose where the response goes
        (b"SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKx;received=8.8.8.8",
         b"SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKx;received=192.0.2.9"),
        (b"SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKx;received=192.0.2.9",
         b"SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKx;received=192.0.2.9"),
    ],
)
def test_received_and_rport_stamping(via: bytes, expected: bytes) -> None:
    """RFC 3261 §18.2.1 / RFC 3581 on the top Via, whatever its spelling."""
    from edgeproxy.sip.destinations import stamp_received

    req = parse_request(b"OPTIONS sip:a@b SIP/2.0\r\nVia: " + via + b"\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\n"
                        b"Call-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    stamp_received(req, "192.0.2.9", 40000)
    assert req.raw_lines("Via")[0] == b"Via: " + expected
    assert parse_request(req.to_bytes()).top_via.params == req.top_via.params


def test_message_and_transaction_bases_cannot_be_instantiated_incomplete() -> None:
    """Abstract keeps abc.ABC's guarantee without its metaclass (isinstance stays the fast path)."""
    from edgeproxy.sip.message import Message
    from edgeproxy.sip.transaction import ClientTransaction

    class Incomplete(Message):
        __slots__ = ()

    for cls in (Message, Incomplete, ClientTransaction):
        with pytest.raises(TypeError, match="abstract"):
            cls([], [])  # type: ignore[abstract, arg-type]
    assert isinstance(parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                                    b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
                                    b"Content-Length: 0\r\n\r\n"), Message)


@pytest.mark.parametrize(("via", "branch"), [
    ("SIP/2.0/UDP h:5060;branch=z9hG4bKa1;rport", "z9hG4bKa1"),
    ("SIP/2.0/UDP h;rport;branch=z9hG4bKa2", "z9hG4bKa2"),
    ("SIP/2.0/UDP h;branch=z9hG4bKa3 , SIP/2.0/UDP k;branch=z9hG4bKk", "z9hG4bKa3"),
    ("SIP/2.0/UDP h , SIP/2.0/UDP k;branch=z9hG4bKk", ""),  # the second Via's branch is not the top one's
    ("SIP/2.0/UDP h ; BRANCH = z9hG4bKa4", "z9hG4bKa4"),  # the plain spelling missed: parsed in full
    ("SIP/2.0/UDP h", ""),
])
def test_top_branch_is_the_top_vias_branch(via: str, branch: str) -> None:
    msg = parse_message(f"SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\n"
                        f"Call-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".encode())
    assert msg.top_branch == branch == (msg.top_via.branch or "")


def test_start_lines_and_header_views_seen_before_parse_the_same_and_the_tables_stay_bounded() -> None:
    from edgeproxy.sip import parser

    head = b"Via: SIP/2.0/UDP h;branch=z9hG4bK%d\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c%d\r\n"
    first = parse_request(b"INVITE sip:u@h SIP/2.0\r\n" + head % (1, 1) + b"CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n")
    again = parse_request(b"INVITE sip:u@h SIP/2.0\r\n" + head % (2, 2) + b"CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert (again.method, again.uri_text, again.call_id, again.cseq.number) == ("INVITE", "sip:u@h", "c2", 7)
    assert again is not first and again.keys is not first.keys and first.call_id == "c1"
    ok = b"SIP/2.0 180 Ringing\r\n" + head % (3, 3) + b"CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
    for _ in range(2):
        resp = parse_message(ok)
        assert isinstance(resp, Response) and (resp.status, resp.reason) == (180, "Ringing")
    for n in range(parser._STARTS_LIMIT + 10):  # a flood of distinct Request-URIs
        parse_message(f"OPTIONS sip:{n}@h SIP/2.0\r\n".encode() + head % (n, n) + b"CSeq: 1 OPTIONS\r\n\r\n")
    assert len(parser._STARTS) <= parser._STARTS_LIMIT
    for _ in range(2):  # a bad line fails every time, not only the first
        with pytest.raises(SipError, match="Malformed Call-ID"):
            parse_request(b"INVITE sip:u@h SIP/2.0\r\n" + (head % (4, 4)).replace(b"c4", b"c 4")
                          + b"CSeq: 7 INVITE\r\n\r\n")
