"""REGISTER rules and digest math, as pure functions."""

from __future__ import annotations

import hashlib

import pytest

from edgeproxy.sip import Request, SipError, parse_message, validate
from edgeproxy.state.location import Binding
from registrar.bindings import ExpiryPolicy, Origin, aor_of, apply_register, contact_value, requested_contacts
from registrar.digest import Nonces, challenge, decoy_ha1, expected_response, parse_authorization

POLICY = ExpiryPolicy(min_expires=60, max_expires=3600, default_expires=1800)
NOW = 1_800_000_000.0


def register(contacts: list[str], expires: str | None = None, call_id: str = "reg-1", cseq: int = 1,
             to: str = "<sip:alice@Example.COM>") -> Request:
    lines = ["REGISTER sip:example.com SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKr1;rport",
             f"From: {to};tag=f1", f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq} REGISTER",
             "Max-Forwards: 70"] + [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    validate(msg)
    return msg


def origin(call_id: str = "reg-1", cseq: int = 1) -> Origin:
    return Origin(call_id, cseq, (), "udp:10.0.0.5:5060", False, "edge-1", "phone")


def apply(current: list[Binding], req: Request, max_contacts: int = 10) -> list[Binding]:
    return apply_register(current, requested_contacts(req, POLICY), origin(req.call_id, req.cseq.number), NOW,
                          max_contacts)


def test_aor_is_unescaped_user_at_lowercase_host() -> None:
    assert aor_of(register([], to="<sip:%61lice@Example.COM>").to.uri) == "alice@example.com"
    assert aor_of(register([], to="<sip:bob@10.0.0.1>").to.uri, lambda h: "example.com") == "bob@example.com"
    with pytest.raises(SipError):
        aor_of(register([], to="<tel:+15551234>").to.uri)


def test_expiry_sources_and_clamping() -> None:
    req = register(["<sip:a@10.0.0.5>;expires=120", "<sip:b@10.0.0.5>", "<sip:c@10.0.0.5>;expires=99999"], "300")
    assert [r.expires for r in requested_contacts(req, POLICY) or []] == [120, 300, 3600]
    assert [r.expires for r in requested_contacts(register(["<sip:a@h>"]), POLICY) or []] == [1800]
    with pytest.raises(SipError) as info:
        requested_contacts(register(["<sip:a@h>"], "30"), POLICY)
    assert info.value.status == 423 and info.value.headers == [("Min-Expires", "60")]


def test_add_refresh_remove_and_q() -> None:
    first = apply([], register(["<sip:a@h1>;q=0.5", "<sip:a@h2>"], "600"))
    assert {(b.contact, b.q, b.expires_at - NOW) for b in first} == {("sip:a@h1", 0.5, 600), ("sip:a@h2", 1.0, 600)}
    refreshed = apply(first, register(["<sip:a@h1>;q=0.5"], "900", cseq=2))
    assert {b.contact: b.expires_at - NOW for b in refreshed} == {"sip:a@h1": 900, "sip:a@h2": 600}
    removed = apply(refreshed, register(["<sip:a@h2>"], "0", cseq=3))
    assert [b.contact for b in removed] == ["sip:a@h1"]
    assert apply(removed, register(["*"], "0", cseq=4)) == []
    with pytest.raises(SipError):
        requested_contacts(register(["*"], "60"), POLICY)
    with pytest.raises(SipError):
        requested_contacts(register(["<sip:a@h>;q=2"]), POLICY)


def test_out_of_order_refresh_is_ignored() -> None:
    current = apply([], register(["<sip:a@h1>"], "600", cseq=5))
    stale = apply(current, register(["<sip:a@h1>"], "0", cseq=4))  # an old de-registration arriving late
    assert [b.contact for b in stale] == ["sip:a@h1"]
    other_call = apply(current, register(["<sip:a@h1>"], "0", call_id="reboot", cseq=1))
    assert other_call == []  # a new Call-ID (a rebooted phone) does update


def test_instance_replaces_its_own_binding() -> None:
    inst = '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000a95a0e128>";reg-id=1'
    first = apply([], register([f"<sip:a@192.0.2.1:5060>;{inst}"], "600"))
    moved = apply(first, register([f"<sip:a@198.51.100.9:6000>;{inst}"], "600", call_id="new", cseq=1))
    assert [b.contact for b in moved] == ["sip:a@198.51.100.9:6000"]
    assert moved[0].reg_id == 1 and "urn:uuid" in (moved[0].instance or "")
    assert contact_value(moved[0], NOW + 100) == f"<sip:a@198.51.100.9:6000>;expires=500;{inst}"
    second_device = apply(moved, register(["<sip:a@203.0.113.4>"], "600", call_id="desk"))
    assert len(second_device) == 2


def test_max_contacts() -> None:
    with pytest.raises(SipError) as info:
        apply([], register([f"<sip:a@h{i}>" for i in range(3)], "600"), max_contacts=2)
    assert info.value.status == 503


def test_digest_vectors_rfc7616() -> None:
    # RFC 7616 §3.9.1, SHA-256 and MD5 examples (Mufasa / Circle of Life)
    for algorithm, want in (("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
                            ("MD5", "8ca523f5e9506fed4657c9700eebdbec")):
        h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
        ha1 = h(b"Mufasa:http-auth@example.org:Circle of Life").hexdigest()
        creds = parse_authorization(
            f'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm={algorithm}, '
            'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", '
            f'qop=auth, response="{want}", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
        assert creds is not None and expected_response(creds, "GET", ha1) == want


def test_nonces_verify_without_state_and_expire() -> None:
    nonces = Nonces(b"k" * 32, "example.com", lifetime=300)
    n = nonces.make(NOW)
    assert nonces.check(n, NOW + 10) == "ok"
    assert nonces.check(n, NOW + 301) == "stale"
    assert Nonces(b"other", "example.com", 300).check(n, NOW) == "bad"  # another deployment's
    assert Nonces(b"k" * 32, "example.org", 300).check(n, NOW) == "bad"  # another realm
    assert nonces.check(n.replace(".", "x", 1), NOW) == "bad"
    assert nonces.make(NOW) != n  # random part: two clients never share a nonce


def test_challenge_and_decoy() -> None:
    values = challenge("example.com", "n1", ["SHA-256", "MD5"], stale=True)
    assert values[0].startswith('Digest realm="example.com", nonce="n1", algorithm=SHA-256, qop="auth"')
    assert values[1].endswith("stale=true") and "MD5" in values[1]
    assert len(decoy_ha1(b"s", "ghost", "MD5")) == 32 and len(decoy_ha1(b"s", "ghost", "SHA-256")) == 64
    assert parse_authorization("Basic dXNlcjpwYXNz") is None
    with pytest.raises(SipError):
        parse_authorization('Digest username="a"')
