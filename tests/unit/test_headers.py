import pytest

from edgeproxy.sip import SipError, parse_cseq, parse_name_addr, parse_via
from edgeproxy.sip.names import COMPACT, key_of, key_of_bytes
from edgeproxy.sip.tokens import parse_params, quote, split_commas, unquote


@pytest.mark.parametrize("short,key", sorted(COMPACT.items()))
def test_compact_forms(short: str, key: str) -> None:
    assert key_of(short) == key
    assert key_of_bytes(short.upper().encode()) == key


def test_case_insensitive_names_and_trailing_space() -> None:
    assert key_of_bytes(b"MaX-fOrWaRdS") == "max-forwards"
    assert key_of_bytes(b"Content-Length   ") == "content-length"
    with pytest.raises(SipError):
        key_of_bytes(b"Bad Name")


def test_quoted_strings_with_escapes() -> None:
    assert unquote(r'"J Rosenberg \\\""') == 'J Rosenberg \\"'
    assert unquote(quote('a "b" \\ c')) == 'a "b" \\ c'


def test_split_commas_respects_quotes_and_brackets() -> None:
    value = '"Doe, John" <sip:j@x;a=b,c>;q=0.5, <sip:k@y>, sip:l@z'
    assert split_commas(value) == ['"Doe, John" <sip:j@x;a=b,c>;q=0.5', "<sip:k@y>", "sip:l@z"]
    with pytest.raises(SipError):
        split_commas("a,,b")


def test_params_with_lws_quotes_and_flags() -> None:
    assert parse_params(' ; newparam =\t newvalue ;  secondparam ; q = 0.33') == {
        "newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert parse_params(';+sip.instance="<urn:uuid:1;2>";reg-id=1') == {
        "+sip.instance": '"<urn:uuid:1;2>"', "reg-id": "1"}
    assert parse_params(";received=[2001:db8::1]") == {"received": "[2001:db8::1]"}
    for bad in [";;", ";a=", ";a b=c", "x;a", ';a="unterminated']:
        with pytest.raises(SipError):
            parse_params(bad)


def test_name_addr_forms() -> None:
    na = parse_name_addr('"Alice \\"A\\"" <sip:alice@example.com>;tag=1234;foo')
    assert na.display == '"Alice \\"A\\""' and na.uri.user == "alice" and na.tag == "1234"
    assert na.params == {"tag": "1234", "foo": None}
    plain = parse_name_addr("Bob Smith <sip:bob@example.com>")
    assert plain.display == "Bob Smith" and plain.uri.host == "example.com"
    tight = parse_name_addr("caller<sip:caller@example.com>;tag=323")
    assert tight.display == "caller" and tight.tag == "323"
    spec = parse_name_addr("sip:carol@example.com;tag=99")
    assert spec.display is None and spec.uri.params == {} and spec.tag == "99"
    other = parse_name_addr("<http://www.example.com>;tag=3")
    assert other.uri.scheme == "http" and other.tag == "3"


@pytest.mark.parametrize(
    "bad",
    ['"Mr. J. User <sip:j.user@example.com>', "Bell, Alexander <sip:a.g.bell@example.com>",
     "< sip:t.watson@example.org >", '"Joe" sip:joe@example.org', "<sip:a@b", "<>", "sip:a@b c"],
)
def test_bad_name_addr(bad: str) -> None:
    with pytest.raises(SipError) as info:
        parse_name_addr(bad)
    assert info.value.status == 400


def test_name_addr_uri_parsed_on_use() -> None:
    na = parse_name_addr("<sip:bob@host:notaport>;tag=1")
    assert na.tag == "1"
    with pytest.raises(SipError):
        _ = na.uri


def test_via_all_parts() -> None:
    v = parse_via("SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776;received=10.0.0.1;rport=4000;maddr=224.2.0.1;ttl=16")
    assert (v.transport, v.host, v.port) == ("UDP", "192.0.2.10", 5062)
    assert (v.branch, v.received, v.rport, v.maddr, v.ttl) == ("z9hG4bK776", "10.0.0.1", 4000, "224.2.0.1", 16)
    flag = parse_via("SIP/2.0/tcp client.example.com;rport;branch=z9hG4bKx")
    assert flag.transport == "TCP" and flag.has_rport and flag.rport is None and flag.port is None


def test_via_with_lws_and_ipv6() -> None:
    v = parse_via("SIP  /   2.0 /UDP    192.0.2.2 : 5070  ;  branch = 390skdjuw")
    assert (v.transport, v.host, v.port, v.branch) == ("UDP", "192.0.2.2", 5070, "390skdjuw")
    v6 = parse_via("SIP/2.0/TLS [2001:db8::9:1]:5061;branch=z9hG4bKas;received=[2001:db8::9:255]")
    assert v6.host == "[2001:db8::9:1]" and v6.port == 5061 and v6.received == "[2001:db8::9:255]"
    assert str(parse_via("SIP/2.0/UDP h;branch=b;rport")) == "SIP/2.0/UDP h;branch=b;rport"


@pytest.mark.parametrize(
    "bad", ["SIP/2.0/UDP", "SIP/3.0/UDP host", "SIP/2.0/UDP host;;", "SIP/2.0/UDP host;ttl=999", "HTTP/1.1 host",
            "SIP/2.0/UDP host:70000"],
)
def test_bad_via(bad: str) -> None:
    with pytest.raises(SipError):
        parse_via(bad)


def test_cseq() -> None:
    c = parse_cseq("0009 INVITE")
    assert (c.number, c.method) == (9, "INVITE")
    for bad in ["1", "x INVITE", "1 INVITE extra", "36893488147419103232 INVITE", "2147483648 ACK"]:
        with pytest.raises(SipError):
            parse_cseq(bad)
