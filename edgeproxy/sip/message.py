"""The SIP message model: a start line, header lines kept as raw bytes, a body.

Headers are two parallel lists in wire order: `keys` (canonical lower-case
names) and `lines` (the exact bytes received, folding included). Only lines
that code changes are rebuilt, so a forwarded message carries every other
header untouched. Typed views (Via, From, CSeq…) are parsed on first use and
cached until that header changes.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Iterator

from .abstract import Abstract
from .errors import bad_request
from .headers import CSeq, NameAddr, Via, parse_cseq, parse_name_addr, parse_uint, parse_via
from .memo import parsed_once
from .names import display_name, key_of, line_prefix
from .tokens import split_commas
from .uri import URI, parse_uri

CRLF = b"\r\n"
_VIA_PREFIX = line_prefix("via")
# `;branch=value` in the first value of a Via line, spelled plainly (the slow path takes the rest)
_PLAIN_BRANCH = re.compile(rb"[^,]*?;branch=([^;,\s]+)(?=[;,\r\n]|$)").match
_MF_LINES = [b"Max-Forwards: %d" % n for n in range(256)]  # rewritten on every forwarded request
_UNSET = object()

# Header key → the cache slot its typed view lives in.
_SLOTS = {
    "via": ("_via", "_vias"),
    "from": ("_from",),
    "to": ("_to",),
    "call-id": ("_call_id",),
    "cseq": ("_cseq",),
    "max-forwards": ("_max_forwards",),
}


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def line_value(raw: bytes) -> bytes:
    """The value of a raw header line: after the colon, unfolded, stripped."""
    value = raw.partition(b":")[2]
    if b"\n" in value:
        value = b" ".join(part.strip() for part in value.splitlines())
    return value.strip()


def line_text(raw: bytes) -> str:
    """The value of a raw header line as text (see line_value)."""
    value = raw.partition(b":")[2]
    if b"\n" in value:
        value = line_value(raw)
    return value.strip().decode("utf-8", "surrogateescape")


def _call_id(raw: bytes) -> str:
    value = line_text(raw)
    if not value or " " in value or "\t" in value:
        raise bad_request("Malformed Call-ID")
    return value


# From, To, Call-ID, CSeq and Max-Forwards views parsed once per raw line (name and spelling included):
# every message of a dialog repeats its lines byte for byte, and CSeq `1 INVITE` recurs
# across calls. The views are shared, so they are only read, never changed.
_name_addr_line = parsed_once(lambda raw: parse_name_addr(line_text(raw)))
_cseq_line = parsed_once(lambda raw: parse_cseq(line_text(raw)))
_call_id_line = parsed_once(_call_id)
_max_forwards_line = parsed_once(lambda raw: parse_uint(line_text(raw), 255, "Max-Forwards"))


def header_line(key: str, value: str | bytes) -> bytes:
    return line_prefix(key) + (value if isinstance(value, bytes) else encode(value))


class Message(Abstract):
    __slots__ = ("_call_id", "_cseq", "_from", "_max_forwards", "_to", "_via", "_vias", "body", "keys", "lines")

    def __init__(self, keys: list[str], lines: list[bytes], body: bytes = b"") -> None:
        self.keys = keys
        self.lines = lines
        self.body = body
        self._via = self._vias = self._from = self._to = self._call_id = self._cseq = self._max_forwards = _UNSET

    @abc.abstractmethod
    def start_line(self) -> bytes:
        """The request or status line, as bytes."""

    # -- reading -----------------------------------------------------------
    def headers(self) -> Iterator[tuple[str, bytes]]:
        """(key, raw line) pairs in wire order."""
        return zip(self.keys, self.lines)

    def positions(self, name: str) -> list[int]:
        key = key_of(name)
        keys = self.keys
        n = keys.count(key)
        if n < 2:  # the common case, without a Python loop over the headers
            return [keys.index(key)] if n else []
        return [i for i, k in enumerate(keys) if k == key]

    def has(self, name: str) -> bool:
        return key_of(name) in self.keys

    def get(self, name: str) -> str | None:
        """Value of the first line of a header, or None."""
        key = key_of(name)
        keys = self.keys
        if key not in keys:
            return None
        return decode(line_value(self.lines[keys.index(key)]))

    def get_lines(self, name: str) -> list[str]:
        lines = self.lines
        return [decode(line_value(lines[i])) for i in self.positions(name)]

    def values(self, name: str) -> list[str]:
        """Every comma-separated value of a multi-value header, in order."""
        out: list[str] = []
        for line in self.get_lines(name):
            out.extend(split_commas(line))
        return out

    def first_value(self, name: str) -> str | None:
        """The first comma-separated value of a header (the top Route, the first
        Contact), without splitting the rest; None when absent."""
        key = key_of(name)
        keys = self.keys
        if key not in keys:
            return None
        value = decode(line_value(self.lines[keys.index(key)]))
        return split_commas(value)[0] if "," in value or not value else value

    def raw_lines(self, name: str) -> list[bytes]:
        lines = self.lines
        return [lines[i] for i in self.positions(name)]

    def single(self, name: str) -> str | None:
        """Value of a header that must appear at most once (400 otherwise)."""
        return self._single(key_of(name))

    def _single(self, key: str) -> str | None:
        keys = self.keys
        try:
            i = keys.index(key)
        except ValueError:
            return None
        if keys.count(key) > 1:
            raise bad_request(f"Multiple {display_name(key)} headers")
        return line_text(self.lines[i])

    def _line(self, key: str) -> bytes:
        """The line of From, To, Call-ID or CSeq: parse_message made sure each appears once."""
        try:
            return self.lines[self.keys.index(key)]
        except ValueError:
            raise bad_request(f"Missing {display_name(key)}") from None

    @property
    def vias(self) -> list[Via]:
        if self._vias is _UNSET:
            self._vias = [parse_via(v) for v in self.values("via")]
        return self._vias  # type: ignore[return-value]

    @property
    def top_via(self) -> Via:
        if self._via is _UNSET:
            keys = self.keys
            if "via" not in keys:
                raise bad_request("Missing Via")
            first = decode(line_value(self.lines[keys.index("via")]))
            self._via = parse_via(split_commas(first)[0] if "," in first else first)
        return self._via  # type: ignore[return-value]

    @property
    def top_branch(self) -> str:
        """The top Via's branch ("" without one). A response is matched to the request we
        sent by its branch alone (RFC 3261 §17.1.3): read from the line, with no full Via
        parse, when the first value spells it plainly."""
        if self._via is _UNSET and "via" in self.keys:
            plain = _PLAIN_BRANCH(self.lines[self.keys.index("via")])
            if plain is not None:
                return plain[1].decode("utf-8", "surrogateescape")
        return self.top_via.branch or ""

    @property
    def from_(self) -> NameAddr:
        if self._from is _UNSET:
            self._from = _name_addr_line(self._line("from"))
        return self._from  # type: ignore[return-value]

    @property
    def to(self) -> NameAddr:
        if self._to is _UNSET:
            self._to = _name_addr_line(self._line("to"))
        return self._to  # type: ignore[return-value]

    @property
    def call_id(self) -> str:
        if self._call_id is _UNSET:
            self._call_id = _call_id_line(self._line("call-id"))
        return self._call_id  # type: ignore[return-value]

    @property
    def cseq(self) -> CSeq:
        if self._cseq is _UNSET:
            self._cseq = _cseq_line(self._line("cseq"))
        return self._cseq  # type: ignore[return-value]

    @property
    def max_forwards(self) -> int | None:
        if self._max_forwards is _UNSET:
            keys = self.keys  # parse_message allows one at most
            self._max_forwards = _max_forwards_line(self.lines[keys.index("max-forwards")]) \
                if "max-forwards" in keys else None
        return self._max_forwards  # type: ignore[return-value]

    @property
    def expires(self) -> int | None:
        """Expires header; RFC 3261 caps delta-seconds at 2**32-1."""
        value = self.single("expires")
        if value is None:
            return None
        if not value.isdigit() or not value.isascii():
            raise bad_request("Malformed Expires")
        return min(int(value[:11]), 2**32 - 1)

    def name_addrs(self, name: str) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.values(name)]

    @property
    def contact_star(self) -> bool:
        return self.get_lines("contact") == ["*"]

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact entries; empty for `Contact: *` (see `contact_star`)."""
        return [] if self.contact_star else self.name_addrs("contact")

    @property
    def routes(self) -> list[NameAddr]:
        return self.name_addrs("route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self.name_addrs("record-route")

    @property
    def event(self) -> str | None:
        value = self.get("event")
        return None if value is None else value.split(";", 1)[0].strip().lower()

    # -- changing ----------------------------------------------------------
    def _changed(self, key: str) -> None:
        for slot in _SLOTS.get(key, ()):
            setattr(self, slot, _UNSET)

    def insert(self, name: str, value: str | bytes) -> None:
        """Add a line above the first line of the same header (top if none)."""
        key = key_of(name)
        keys = self.keys
        at = keys.index(key) if key in keys else 0
        keys.insert(at, key)
        self.lines.insert(at, header_line(key, value))
        self._changed(key)

    def append(self, name: str, value: str | bytes) -> None:
        """Add a line below the last line of the same header (end if none)."""
        key = key_of(name)
        pos = self.positions(key)
        at = pos[-1] + 1 if pos else len(self.keys)
        self.keys.insert(at, key)
        self.lines.insert(at, header_line(key, value))
        self._changed(key)

    def set(self, name: str, value: str | bytes) -> None:
        """Make `value` the only line of this header, where the first one was."""
        key = key_of(name)
        keys = self.keys
        if key not in keys:
            keys.append(key)
            self.lines.append(header_line(key, value))
        else:
            at = keys.index(key)
            if keys.count(key) > 1:
                self.remove(key)
                keys.insert(at, key)
                self.lines.insert(at, header_line(key, value))
            else:
                self.lines[at] = header_line(key, value)
        self._changed(key)

    def remove(self, name: str) -> None:
        key = key_of(name)
        positions = self.positions(key)
        for i in reversed(positions):
            del self.keys[i]
            del self.lines[i]
        if positions:
            self._changed(key)

    def remove_first_value(self, name: str) -> None:
        """Remove the first value of a multi-value header (our Via from a response, our
        Route from a request); a line with that value alone goes, unread."""
        key = key_of(name)
        keys = self.keys
        if key not in keys:
            return
        at = keys.index(key)
        raw = self.lines[at]
        rest = split_commas(decode(line_value(raw)))[1:] if b"," in raw else None
        if rest:
            self.lines[at] = header_line(key, ", ".join(rest))
        else:
            del keys[at]
            del self.lines[at]
        self._changed(key)

    def replace_first_value(self, name: str, value: str) -> None:
        """Rewrite the first value of a header, keeping the line's other values."""
        key = key_of(name)
        keys = self.keys
        if key not in keys:
            self.insert(name, value)
            return
        at = keys.index(key)
        line = decode(line_value(self.lines[at]))
        rest = split_commas(line)[1:] if "," in line else []
        self.lines[at] = header_line(key, ", ".join([value, *rest]))
        self._changed(key)

    def set_top_via(self, via: Via) -> None:
        """Rewrite the first Via value from `via`, which stays the parsed top Via."""
        keys = self.keys
        at = keys.index("via") if "via" in keys else -1
        if at < 0 or b"," in self.lines[at]:
            self.replace_first_value("Via", str(via))
        else:  # the common line with one value: written at once
            self.lines[at] = _VIA_PREFIX + encode(str(via))
            self._vias = _UNSET
        self._via = via

    def set_max_forwards(self, hops: int) -> None:
        """Rewrite Max-Forwards (0–255) in place, as every forwarded request needs."""
        keys = self.keys
        if "max-forwards" in keys:  # parse_message allows one at most
            self.lines[keys.index("max-forwards")] = _MF_LINES[hops]
        else:
            keys.append("max-forwards")
            self.lines.append(_MF_LINES[hops])
        self._max_forwards = hops

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        self.body = body
        self.set("Content-Length", str(len(body)))
        if content_type is not None:
            self.set("Content-Type", content_type)

    # -- writing -----------------------------------------------------------
    def to_bytes(self) -> bytes:
        return CRLF.join([self.start_line(), *self.lines, b"", self.body])

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {decode(self.start_line())!r}>"


def build_lines(headers: Iterable[tuple[str, str]], body: bytes) -> tuple[list[str], list[bytes]]:
    """Keys and lines for (name, value) pairs, ending with the body's Content-Length."""
    keys: list[str] = []
    lines: list[bytes] = []
    for name, value in headers:
        key = key_of(name)
        if key != "content-length":
            keys.append(key)
            lines.append(header_line(key, value))
    keys.append("content-length")
    lines.append(header_line("content-length", str(len(body))))
    return keys, lines


class Request(Message):
    __slots__ = ("_start", "_uri", "method", "uri_text", "version")

    def __init__(
        self,
        method: str,
        uri: str | URI,
        keys: list[str],
        lines: list[bytes],
        body: bytes = b"",
        version: str = "SIP/2.0",
        start: bytes | None = None,
    ) -> None:
        Message.__init__(self, keys, lines, body)
        self.method = method
        self.version = version
        self._uri: URI | None = uri if isinstance(uri, URI) else None
        self.uri_text = uri if isinstance(uri, str) else str(uri)
        self._start = start

    @classmethod
    def build(cls, method: str, uri: str | URI, headers: Iterable[tuple[str, str]], body: bytes = b"") -> Request:
        """A new request; Content-Length is written from the body."""
        keys, lines = build_lines(headers, body)
        return cls(method, uri, keys, lines, body)

    @property
    def uri(self) -> URI:
        if self._uri is None:
            self._uri = parse_uri(self.uri_text)
        return self._uri

    @uri.setter
    def uri(self, value: URI | str) -> None:
        self._uri = value if isinstance(value, URI) else None
        self.uri_text = str(value)
        self._start = None

    def start_line(self) -> bytes:
        if self._start is None:
            self._start = encode(f"{self.method} {self.uri_text} {self.version}")
        return self._start

    def copy(self) -> Request:
        """An independent copy for forking: header lists copied; parsed views are
        shared (they are replaced, never edited in place, once a message is parsed)."""
        clone = Request.__new__(Request)  # every slot set here: no __init__ to run on the hot path
        clone.keys, clone.lines, clone.body = self.keys[:], self.lines[:], self.body
        clone.method, clone.version, clone._uri, clone.uri_text, clone._start = (
            self.method, self.version, self._uri, self.uri_text, self._start)
        clone._via, clone._vias, clone._from, clone._to = self._via, self._vias, self._from, self._to
        clone._call_id, clone._cseq, clone._max_forwards = self._call_id, self._cseq, self._max_forwards
        return clone


class Response(Message):
    __slots__ = ("_start", "reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: str,
        keys: list[str],
        lines: list[bytes],
        body: bytes = b"",
        version: str = "SIP/2.0",
        start: bytes | None = None,
    ) -> None:
        Message.__init__(self, keys, lines, body)
        self.status = status
        self.reason = reason
        self.version = version
        self._start = start

    def set_status(self, status: int, reason: str) -> None:
        self.status, self.reason, self._start = status, reason, None

    @classmethod
    def build(cls, status: int, reason: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> Response:
        keys, lines = build_lines(headers, body)
        return cls(status, reason, keys, lines, body)

    def start_line(self) -> bytes:
        if self._start is None:
            self._start = encode(f"{self.version} {self.status} {self.reason}")
        return self._start
