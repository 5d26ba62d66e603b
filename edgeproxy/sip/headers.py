"""Structured header values: name-addr/addr-spec, Via, CSeq and integers."""

from __future__ import annotations

from .chars import HOST, TOKEN, is_token
from .errors import bad_request
from .memo import parsed_once
from .names import METHODS
from .tokens import Params, format_params, parse_params, quoted_end
from .uri import URI, parse_host_port, parse_uri


class NameAddr:
    """From, To, Contact, Route, Record-Route and Path entries.

    The URI is parsed on first use: a proxy relaying From and To only needs
    their tags, and a URI that fails later still raises the typed 400.
    """

    __slots__ = ("_uri", "_uri_text", "display", "params")

    def __init__(self, uri: URI | str, display: str | None = None, params: Params | None = None) -> None:
        self.display = display  # as written, quotes included
        self.params: Params = {} if params is None else params
        self._uri = uri if isinstance(uri, URI) else None
        self._uri_text = uri if isinstance(uri, str) else None

    @property
    def uri(self) -> URI:
        if self._uri is None:
            self._uri = parse_uri(self._uri_text or "")
        return self._uri

    @uri.setter
    def uri(self, value: URI) -> None:
        self._uri, self._uri_text = value, None

    @property
    def uri_text(self) -> str:
        return self._uri_text if self._uri_text is not None else str(self._uri)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        head = f"{self.display} <{self.uri_text}>" if self.display else f"<{self.uri_text}>"
        return head + format_params(self.params) if self.params else head

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NameAddr) and str(self) == str(other)


def parse_name_addr(text: str) -> NameAddr:
    # the common `<uri>;params` and `"display" <uri>;params`, without the general parser
    if text[:1] == "<":
        lt, display = 0, None
    elif text[:1] == '"' and (q := text.find('"', 1)) > 0 and text[q + 1 : q + 3] == " <" and "\\" not in text[:q]:
        lt, display = q + 2, text[: q + 1]
    else:
        return _parse_name_addr(text.strip())
    gt = text.find(">", lt)
    inner = text[lt + 1 : gt]
    if gt > 0 and ":" in inner and not (" " in inner or "<" in inner or '"' in inner or "\t" in inner):
        rest = text[gt + 1 :]
        return NameAddr(inner, display, parse_params(rest) if rest else {})
    return _parse_name_addr(text.strip())


# From, To, Route, Record-Route and Path entries, parsed once per text: every request of a
# dialog repeats its From and To, and our Record-Route comes back on each. The NameAddr is
# shared, so it is only read, never changed (a Contact, which may be, is parsed anew).
shared_name_addr = parsed_once(parse_name_addr)


def _parse_name_addr(text: str) -> NameAddr:
    display: str | None = None
    if text.startswith('"'):
        end = quoted_end(text, 0)
        display = text[:end]
        lt = end
        while lt < len(text) and text[lt] in " \t":
            lt += 1
        if lt >= len(text) or text[lt] != "<":
            raise bad_request("Display name without <URI>")
    else:
        lt = text.find("<")
        if lt >= 0 and (";" in text[:lt] or '"' in text[:lt]):
            lt = -1  # the '<' belongs to a parameter of an addr-spec
        if lt > 0:
            words = text[:lt].split()
            if not all(not w.strip(TOKEN) for w in words):
                raise bad_request("Malformed display name")
            display = " ".join(words) or None
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise bad_request("Unterminated <URI>")
        inner = text[lt + 1 : gt]
        _check_uri_shape(inner)
        return NameAddr(inner, display, parse_params(text[gt + 1 :].strip()))
    # addr-spec: header parameters start at the first ';'
    semi = text.find(";")
    spec = text if semi < 0 else text[:semi].rstrip()
    _check_uri_shape(spec)
    return NameAddr(spec, None, parse_params(text[semi:]) if semi >= 0 else {})


def _check_uri_shape(text: str) -> None:
    """The cheap checks done at once; the full URI parse happens on use."""
    colon = text.find(":")
    if colon <= 0 or colon == len(text) - 1 or " " in text or "\t" in text or "<" in text or ">" in text or '"' in text:
        raise bad_request("Malformed URI in name-addr")


class Via:
    __slots__ = ("host", "params", "port", "transport")

    def __init__(self, transport: str, host: str, port: int | None = None, params: Params | None = None) -> None:
        self.transport = transport  # upper case: UDP, TCP, TLS, WS, WSS, SCTP…
        self.host = host
        self.port = port
        self.params: Params = {} if params is None else params

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def has_rport(self) -> bool:
        return "rport" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return int(value) if value and value.isdigit() else None

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Via) and str(self) == str(other)


_TRANSPORTS = frozenset({"UDP", "TCP", "TLS", "WS", "WSS", "SCTP"})


def parse_via(text: str) -> Via:
    if text.startswith("SIP/2.0/"):
        sp = text.find(" ", 8)
        if sp > 8:
            semi = text.find(";", sp)
            sent_by = text[sp + 1 :] if semi < 0 else text[sp + 1 : semi]
            host, colon, port = sent_by.partition(":")
            transport = text[8:sp]
            if host and not host.strip(HOST) and (transport in _TRANSPORTS or is_token(transport)) and (
                    not colon or (port.isdigit() and port.isascii() and len(port) <= 5 and int(port) <= 65535)):
                params = parse_params(text[semi:]) if semi > 0 else {}
                if "ttl" not in params:
                    return Via(transport.upper(), host, int(port) if colon else None, params)
    return _parse_via_slow(text)


def _parse_via_slow(text: str) -> Via:
    s1 = text.find("/")
    s2 = text.find("/", s1 + 1)
    if s1 < 0 or s2 < 0:
        raise bad_request("Malformed Via")
    if text[:s1].strip().upper() != "SIP" or text[s1 + 1 : s2].strip() != "2.0":
        raise bad_request("Malformed Via protocol")
    rest = text[s2 + 1 :].lstrip()
    i = 0
    n = len(rest)
    while i < n and rest[i] not in " \t":
        i += 1
    return _via(rest[:i], rest[i:].lstrip())


def _via(transport: str, rest: str) -> Via:
    if not is_token(transport):
        raise bad_request("Malformed Via transport")
    semi = rest.find(";")
    sent_by = rest if semi < 0 else rest[:semi]
    host, port = parse_host_port(sent_by)
    params = parse_params(rest[semi:].strip()) if semi >= 0 else {}
    ttl = params.get("ttl")
    if ttl is not None and not (ttl.isdigit() and int(ttl) <= 255):
        raise bad_request("Malformed Via ttl")
    return Via(transport.upper(), host, port, params)


_METHODS = frozenset(METHODS)


class CSeq:
    __slots__ = ("method", "number")

    def __init__(self, number: int, method: str) -> None:
        self.number = number
        self.method = method

    def __str__(self) -> str:
        return f"{self.number} {self.method}"

    def __repr__(self) -> str:
        return f"CSeq({self.number}, {self.method!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CSeq) and (self.number, self.method) == (other.number, other.method)


def parse_cseq(text: str) -> CSeq:
    parts = text.split()
    if len(parts) != 2:
        raise bad_request("Malformed CSeq")
    number, method = parts
    if method in _METHODS and number.isdigit() and number.isascii() and len(number) <= 10:
        value = int(number)
        if value <= 2**31 - 1:
            return CSeq(value, method)
    if not is_token(method):
        raise bad_request("Malformed CSeq method")
    return CSeq(parse_uint(number, 2**31 - 1, "CSeq"), method)


def parse_uint(text: str, maximum: int, what: str) -> int:
    """A decimal header value within [0, maximum], or the typed 400."""
    text = text.strip()
    if not text or len(text) > 10 or not text.isdigit() or not text.isascii():
        raise bad_request(f"Malformed {what}")
    value = int(text)
    if value > maximum:
        raise bad_request(f"{what} out of range")
    return value
