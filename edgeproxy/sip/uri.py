"""SIP, SIPS and TEL URIs (RFC 3261 §19.1, RFC 3966); other schemes kept opaque.

Components keep their escaped spelling so a URI written back is the URI
read; `unescape` gives the value to compare. Parsed URIs are shared: the
same text parses once (Request-URIs, Routes and Contacts repeat from
message to message), so a URI is never changed in place, only replaced
(`dataclasses.replace`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .chars import HEADER_CHARS, HOST, PARAM, PASSWORD, USER, only
from .errors import bad_request
from .memo import parsed_once
from .tokens import Params, format_params

_SCHEME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789+-."
_DIGITS = "0123456789"
_TEL_CHARS = _DIGITS + "+-.()*#ABCDEFabcdefpw"


@dataclass(slots=True, frozen=True)
class URI:
    scheme: str
    host: str = ""
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = field(default_factory=dict)
    headers: str | None = None
    opaque: str | None = None  # everything after "scheme:" for other schemes

    @property
    def is_sip(self) -> bool:
        return self.scheme == "sip" or self.scheme == "sips"

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def transport(self) -> str | None:
        t = self.params.get("transport")
        return t.lower() if t else None

    @property
    def destination(self) -> str:
        """Where a request to this URI goes: its maddr, else its host (IPv6 without brackets)."""
        return (self.params.get("maddr") or self.host).strip("[]")

    @property
    def implied_transport(self) -> str:
        """The transport a request to this URI uses without any lookup: its transport
        parameter, else TLS for sips, else UDP (RFC 3263 §4.1)."""
        return self.transport or ("tls" if self.scheme == "sips" else "udp")

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += (":", self.password)
            if self.scheme != "tel":
                out.append("@")
        out.append(self.hostport)
        if self.params:
            out.append(format_params(self.params))
        if self.headers is not None:
            out += ("?", self.headers)
        return "".join(out)


def unescape(text: str) -> str:
    """Resolve %HH escapes (invalid ones are kept literally)."""
    if "%" not in text:
        return text
    out = bytearray()
    raw = text.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x25 and _is_hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return out.decode("utf-8", "surrogateescape")


def _is_hex(two: bytes) -> bool:
    return len(two) == 2 and all(c in b"0123456789abcdefABCDEF" for c in two)


def parse_host_port(text: str) -> tuple[str, int | None]:
    """`host[:port]` with IPv6 references and the SWS RFC 3261 allows at ':'."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not only(text[1:end], "0123456789abcdefABCDEF:."):
            raise bad_request("Malformed IPv6 reference")
        host = text[: end + 1]
        rest = text[end + 1 :].strip()
        if not rest:
            return host, None
        if rest[0] != ":":
            raise bad_request("Malformed host")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.partition(":")
        if " " in host or "\t" in host:
            host = host.strip()
        if not only(host, HOST):
            raise bad_request("Malformed host")
        if not colon:
            return host, None
    port_text = port_text.strip()
    if not port_text or len(port_text) > 5 or not only(port_text, _DIGITS) or int(port_text) > 65535:
        raise bad_request("Malformed port")
    return host, int(port_text)


def _uri_params(text: str) -> Params:
    params: Params = {}
    if not text.strip(PARAM + ";="):
        for item in text.split(";"):
            name, eq, value = item.partition("=")
            if not name or (eq and (not value or "=" in value)):
                raise bad_request("Malformed URI parameter")
            params[name.lower()] = value if eq else None
        return params
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not only(name, PARAM) or (eq and not only(value, PARAM)):
            raise bad_request("Malformed URI parameter")
        params[name.lower()] = value if eq else None
    return params


@parsed_once
def parse_uri(text: str) -> URI:
    colon = text.find(":")
    if colon <= 0:
        raise bad_request("Malformed URI")
    scheme = text[:colon].lower()
    if not scheme[0].isalpha() or not only(scheme, _SCHEME_CHARS):
        raise bad_request("Malformed URI scheme")
    rest = text[colon + 1 :]
    if scheme == "sip" or scheme == "sips":
        return _parse_sip(scheme, rest)
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not only(number, _TEL_CHARS):
            raise bad_request("Malformed tel URI")
        return URI("tel", user=number, params=_uri_params(params) if params else {})
    if not rest or any(c in rest for c in " \t\r\n<>\""):
        raise bad_request("Malformed URI")
    return URI(scheme, opaque=rest)


_PLAIN_SIP = HOST + "@:;="  # user@host:port;params with nothing unusual


def _parse_sip(scheme: str, rest: str) -> URI:
    if not rest.strip(_PLAIN_SIP):
        at = rest.find("@")
        semi = rest.find(";", at + 1)
        hostport = rest[at + 1 :] if semi < 0 else rest[at + 1 : semi]
        user = rest[:at] if at >= 0 else None
        if ":" not in (user or "") and "@" not in hostport and user != "":
            host, _, port = hostport.partition(":")
            if host and only(host, HOST) and (not port or (port.isdigit() and len(port) <= 5)):
                params = _uri_params(rest[semi + 1 :]) if semi >= 0 else {}
                p = int(port) if port else None
                if p is None or p <= 65535:
                    return URI(scheme, host, user, None, p, params, None, None)
    user = password = headers = None
    params: Params = {}
    at = rest.find("@")
    if at >= 0:
        user, colon, pw = rest[:at].partition(":")
        if not only(user, USER) or (colon and pw and not only(pw, PASSWORD)):
            raise bad_request("Malformed URI user")
        if colon:
            password = pw
        rest = rest[at + 1 :]
    q = rest.find("?")
    if q >= 0:
        headers = rest[q + 1 :]
        if not only(headers, HEADER_CHARS + "&"):
            raise bad_request("Malformed URI headers")
        rest = rest[:q]
    semi = rest.find(";")
    if semi >= 0:
        params = _uri_params(rest[semi + 1 :])
        rest = rest[:semi]
    if not rest or " " in rest or "\t" in rest:
        raise bad_request("Malformed URI host")
    host, port = parse_host_port(rest)
    return URI(scheme, host, user, password, port, params, headers)
