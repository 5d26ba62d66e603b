import pytest

from edgeproxy.sip import SipError, parse_uri, unescape


def test_full_sip_uri() -> None:
    u = parse_uri("sips:alice:secret@Example.COM:5061;transport=tls;LR;maddr=10.0.0.1?subject=hi&priority=urgent")
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sips", "alice", "secret", "Example.COM", 5061)
    assert u.params == {"transport": "tls", "lr": None, "maddr": "10.0.0.1"}
    assert u.headers == "subject=hi&priority=urgent"
    assert u.transport == "tls"


def test_hostonly_and_default_port() -> None:
    u = parse_uri("sip:example.com")
    assert u.user is None and u.port is None and u.hostport == "example.com"
    assert str(u) == "sip:example.com"


@pytest.mark.parametrize(
    "text,host,port",
    [("sip:[2001:db8::10]", "[2001:db8::10]", None), ("sip:bob@[2001:db8::10]:5070;lr", "[2001:db8::10]", 5070),
     ("sip:[::1]:5060", "[::1]", 5060)],
)
def test_ipv6_reference(text: str, host: str, port: int | None) -> None:
    u = parse_uri(text)
    assert (u.host, u.port) == (host, port)


def test_escapes_kept_and_resolved() -> None:
    u = parse_uri("sip:%61lice%20b@example.com;n%61me=v%61lue")
    assert u.user == "%61lice%20b"
    assert unescape(u.user) == "alice b"
    assert unescape("100%") == "100%"  # a lone % is kept
    assert str(u) == "sip:%61lice%20b@example.com;n%61me=v%61lue"


def test_user_with_semicolons_and_question_marks() -> None:
    u = parse_uri("sip:user;par=u%40example.net@example.com")
    assert u.user == "user;par=u%40example.net" and u.host == "example.com" and u.params == {}


def test_tel_uri() -> None:
    u = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert u.scheme == "tel" and u.user == "+1-201-555-0123" and u.params == {"phone-context": "example.com"}
    assert str(u) == "tel:+1-201-555-0123;phone-context=example.com"


def test_other_scheme_is_opaque() -> None:
    u = parse_uri("urn:service:sos")
    assert u.scheme == "urn" and u.opaque == "service:sos" and not u.is_sip
    assert str(u) == "urn:service:sos"


@pytest.mark.parametrize(
    "bad",
    ["sip:", "sip:bob@", "sip:bob@host:99999", "sip:bob@host:port", "sip:bo b@host", "nocolon", ":x",
     "sip:[::1", "sip:host;;lr", "sip:host;=x", "sip:@host", "1sip:host", "sip:ho^st", "sip:host?a=<b>"],
)
def test_malformed_uris_raise_400(bad: str) -> None:
    with pytest.raises(SipError) as info:
        parse_uri(bad)
    assert info.value.status == 400


def test_round_trip_keeps_spelling() -> None:
    for text in ["sip:alice@example.com:5080;transport=tcp;lr", "sip:1.2.3.4;maddr=239.0.0.1",
                 "sips:a:b@[2001:db8::1]:5061;x=y?h=v"]:
        assert str(parse_uri(text)) == text


def test_a_uri_is_parsed_once_per_text_in_a_bounded_table() -> None:
    from edgeproxy.sip.memo import parsed_once

    calls: list[str] = []
    once = parsed_once(lambda text: calls.append(text) or text.upper(), limit=3)
    assert once("a") == "A" and once("a") == "A" and calls == ["a"]
    for text in "bcdefg":  # a flood of distinct texts: the table starts afresh, it never grows past 3
        once(text)
    assert once("a") == "A" and calls.count("a") == 2
    assert parse_uri("sip:alice@example.com;transport=tcp") is parse_uri("sip:alice@example.com;transport=tcp")
    with pytest.raises(SipError):
        parse_uri("sip:")  # failures are not kept
    with pytest.raises(SipError):
        parse_uri("sip:")
