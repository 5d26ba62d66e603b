"""Bytes → Request/Response, in one pass over the header block.

The split is done once: start line, header lines (folding merged), body.
Every header is indexed by key but only the ones routing needs are ever
parsed, and only when asked (`validate` asks for the few every request
must have).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

from .chars import is_token_bytes
from .errors import SipError, bad_request
from .memo import parsed_once
from .message import Message, Request, Response, decode, line_value
from .names import METHODS, cached_key, key_of_bytes
from .validate import check_request, check_response, check_structure

_first = itemgetter(0)
_METHODS = {m.encode(): m for m in METHODS}

_DIGITS = b"0123456789"


@dataclass(frozen=True, slots=True)
class Limits:
    max_message: int = 65535  # whole message, start line to end of body
    max_headers: int = 200  # header lines
    max_line: int = 8192  # one header line, folding included


DEFAULT_LIMITS = Limits()


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS, stream: bool = False) -> Request | Response:
    """Split one message and check its structure; header values parse on use.

    `stream`: the bytes came framed from TCP/TLS/WS (a missing Content-Length
    means no body); otherwise they are a datagram (a missing Content-Length
    means the rest of it, RFC 3261 §18.3). Raises SipError; when the start
    line and headers could be split, the error carries the message so a
    request can still be answered. Call `validate` before acting on it.
    """
    msg = split_message(data, limits, stream)
    try:
        check_structure(msg)
    except SipError as err:
        err.message = msg
        raise
    return msg


def validate(msg: Request | Response) -> None:
    """Parse and check every header an element acts on (attaches msg to the error)."""
    try:
        if isinstance(msg, Request):
            check_request(msg)
        else:
            check_response(msg)
    except SipError as err:
        err.message = msg
        raise


def split_message(data: bytes, limits: Limits = DEFAULT_LIMITS, stream: bool = False) -> Request | Response:
    if len(data) > limits.max_message:
        raise SipError(513, "Message Too Large")
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: ignore CRLFs before the start line
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, body_start = data[:end], end + 4
    else:
        end = data.find(b"\n\n")
        if end < 0:
            raise bad_request("Missing empty line after headers")
        head, body_start = data[:end].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), end + 2
    lines = head.split(b"\r\n")
    first = lines[0]
    del lines[0]
    if len(lines) > limits.max_headers:
        raise bad_request("Too Many Headers")
    if len(head) > limits.max_line and max(map(len, lines)) > limits.max_line:
        raise bad_request("Header Line Too Long")
    # Fast path: every name is a spelling seen before. Folded continuation
    # lines, new spellings and lines without a colon all give None.
    found = list(map(cached_key, map(_first, map(bytes.partition, lines, repeat(b":")))))  # C loops only
    error: SipError | None = None
    if None in found:
        keys, lines, error = _slow_keys(lines)
    else:
        keys = found  # type: ignore[assignment]  # no None in it
    msg = _start(first, keys, lines)
    if error is not None:
        error.message = msg
        raise error
    try:
        msg.body = _body(msg, data, body_start, stream)
    except SipError as err:
        err.message = msg
        raise
    return msg


def _slow_keys(lines: list[bytes]) -> tuple[list[str], list[bytes], SipError | None]:
    """Merge folded lines and resolve every name; keep the first error, drop bad lines."""
    out_keys: list[str] = []
    out_lines: list[bytes] = []
    error: SipError | None = None
    for raw in lines:
        try:
            if raw[:1] in (b" ", b"\t"):
                if not out_lines:
                    raise bad_request("Folded line without a header")
                out_lines[-1] += b"\r\n" + raw
                continue
            colon = raw.find(b":")
            if colon <= 0:
                raise bad_request("Malformed header line")
            out_keys.append(key_of_bytes(raw[:colon]))
            out_lines.append(raw)
        except SipError as err:
            error = error or err
    return out_keys, out_lines, error


# Start lines parsed before → (class, method or status, URI or reason): status lines repeat
# on every call, request lines on every request to the same contact. Bounded like
# names._CACHE (cleared when full), so a flood of distinct lines costs a fixed table.
_STARTS: dict[bytes, tuple[type[Request | Response], str | int, str]] = {}
_STARTS_LIMIT = 4096


def _start(line: bytes, keys: list[str], lines: list[bytes]) -> Request | Response:
    known = _STARTS.get(line)
    if known is not None:
        cls, first, second = known
        return cls(first, second, keys, lines, b"", "SIP/2.0", line)  # type: ignore[arg-type]
    msg = _parse_start(line, keys, lines)
    if len(_STARTS) >= _STARTS_LIMIT:
        _STARTS.clear()
    _STARTS[line] = (Response, msg.status, msg.reason) if isinstance(msg, Response) else (Request, msg.method, msg.uri_text)
    return msg


def _parse_start(line: bytes, keys: list[str], lines: list[bytes]) -> Request | Response:
    if line.startswith(b"SIP/"):
        parts = line.split(b" ", 2)
        if len(parts) < 2 or len(parts[1]) != 3 or parts[1].translate(None, _DIGITS):
            raise bad_request("Malformed Status-Line")
        status = int(parts[1])
        if status < 100 or parts[0] != b"SIP/2.0":
            raise bad_request("Malformed Status-Line")
        reason = parts[2].decode("utf-8", "surrogateescape") if len(parts) == 3 else ""
        return Response(status, reason, keys, lines, b"", "SIP/2.0", line)
    parts = line.split(b" ")
    method = _METHODS.get(parts[0])  # the usual methods without a token check or a decode
    if (method is None and not is_token_bytes(parts[0])) or len(parts) < 3:
        raise bad_request("Malformed Request-Line")
    if len(parts) != 3 or not parts[1]:
        # well-formed enough to answer: keep the method so the 400 can be built
        err = bad_request("Malformed Request-Line")
        err.message = Request(parts[0].decode("ascii"), decode(b" ".join(parts[1:])), keys, lines, start=line)
        raise err
    _, uri, version = parts
    method = method or parts[0].decode("ascii")
    if version == b"SIP/2.0":
        return Request(method, uri.decode("utf-8", "surrogateescape"), keys, lines, b"", "SIP/2.0", line)
    if _looks_like_version(version):
        err = SipError(505, "Version Not Supported")
    else:
        err = bad_request("Malformed Request-Line")
    err.message = Request(method, decode(uri), keys, lines, version=decode(version), start=line)
    raise err


def _looks_like_version(version: bytes) -> bool:
    major, dot, minor = version[4:].partition(b".")
    return (
        version[:4].upper() == b"SIP/"
        and bool(dot and major and minor)
        and not (major + minor).translate(None, _DIGITS)
    )


def _body(msg: Message, data: bytes, start: int, stream: bool) -> bytes:
    keys = msg.keys
    try:
        at = keys.index("content-length")
    except ValueError:
        return b"" if stream else data[start:]
    if keys.count("content-length") > 1:
        raise bad_request("Multiple Content-Length headers")
    size = _length_line(msg.lines[at])
    if size > len(data) - start:
        raise bad_request("Content-Length larger than message")
    return data[start : start + size]


def _length(raw: bytes) -> int:
    length = raw.partition(b":")[2].strip() if b"\n" not in raw else line_value(raw)
    if not length.isdigit() or len(length) > 10:
        raise bad_request("Malformed Content-Length")
    return int(length)


_length_line = parsed_once(_length)  # by raw line: a few dozen sizes recur
