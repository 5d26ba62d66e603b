"""Building responses to requests (RFC 3261 §8.2.6)."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress

from .errors import SipError
from .ids import new_tag
from .message import Request, Response, build_lines

REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    423: "Interval Too Brief", 429: "Too Many Requests", 439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

# Copied from the request, as the exact bytes received, in the request's order.
_COPIED = frozenset({"via", "from", "to", "call-id", "cseq"})
_COPIED_100 = _COPIED | {"timestamp"}
_NO_BODY = b"Content-Length: 0"


def make_response(
    req: Request,
    status: int,
    reason: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    to_tag: str | None = None,
) -> Response:
    """A response whose Via/From/To/Call-ID/CSeq are the request's.

    A To tag is added (to_tag, or a random one) unless the request's To has
    one or the response is a 100; Timestamp is echoed on 100 (§8.2.6.1).
    """
    copied = (_COPIED_100 if status == 100 else _COPIED).__contains__
    wanted = list(map(copied, req.keys))  # the request's order, in C loops
    keys = list(compress(req.keys, wanted))
    lines = list(compress(req.lines, wanted))
    if status != 100 and "to" in keys:
        at = keys.index("to")  # one, unless a 400 refuses the request for two
        lines[at] = _with_tag(req, lines[at], to_tag)
    if headers or body:
        extra_keys, extra_lines = build_lines(headers, body)
        keys += extra_keys
        lines += extra_lines
    else:  # the common bare answer (100 Trying, 200 to a CANCEL)
        keys.append("content-length")
        lines.append(_NO_BODY)
    return Response(status, reason or REASONS.get(status, "Unknown"), keys, lines, body)


def _with_tag(req: Request, raw: bytes, to_tag: str | None) -> bytes:
    try:
        has_tag = req.to.tag is not None
    except SipError:
        return raw  # unparseable To (we are answering 400): copy as is
    if has_tag:
        return raw
    return raw + f";tag={to_tag or new_tag()}".encode()


def error_response(err: SipError, req: Request | None = None) -> Response | None:
    """The response a server sends for a SipError, or None when it must not answer."""
    target = req if req is not None else err.message
    if not isinstance(target, Request) or target.method == "ACK":
        return None
    if not target.has("via"):
        return None
    return make_response(target, err.status, err.reason, err.headers)
