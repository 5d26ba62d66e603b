"""What every request and response must satisfy before anyone acts on it,
and the RFC 3261 §16.3 checks a proxy makes before forwarding."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from .errors import SipError, bad_request
from .names import display_name

if TYPE_CHECKING:
    from .message import Message, Request, Response

# URI schemes a Request-URI may carry without a 416 (IANA-registered ones an
# edge proxy may meet); anything else is "Unsupported URI Scheme".
KNOWN_SCHEMES = frozenset(
    {
        "sip", "sips", "tel", "im", "pres", "mailto", "http", "https", "urn",
        "soap.beep", "soap.beeps", "xmpp", "h323", "fax", "modem", "cid", "mid",
    }
)


_SINGLE_REQUIRED = ("from", "to", "call-id", "cseq")


def check_structure(msg: Message) -> None:
    """The checks every message gets at parse time: cheap, on header keys only.

    From/To/Call-ID/CSeq exactly once, at least one Via, Max-Forwards at most
    once. Values are parsed later, when used (RFC 3261 §16.3: a proxy checks
    the components it relies on); `check_request` parses them all.
    """
    keys = msg.keys
    count = keys.count
    if count("from") != 1 or count("to") != 1 or count("call-id") != 1 or count("cseq") != 1:
        for key in _SINGLE_REQUIRED:
            n = count(key)
            if n != 1:
                raise bad_request(f"{'Missing' if n == 0 else 'Multiple'} {display_name(key)}")
    if "via" not in keys:
        raise bad_request("Missing Via")
    if keys.count("max-forwards") > 1:
        raise bad_request("Multiple Max-Forwards")


def check_request(req: Request) -> None:
    """Parse every header a server acts on; raise the SipError it answers with."""
    scheme = req.uri_text.partition(":")[0].lower()
    if scheme and scheme not in KNOWN_SCHEMES and "<" not in scheme:
        raise SipError(416, "Unsupported URI Scheme")
    uri = req.uri
    if uri.is_sip and uri.headers is not None:
        raise bad_request("Headers in Request-URI")
    # each property parses its header and raises on bad syntax
    _parsed = (req.from_, req.to, req.call_id, req.top_via, req.max_forwards)
    if req.cseq.method != req.method:
        raise bad_request("CSeq method does not match Request-Line")


def check_response(resp: Response) -> None:
    """What matching a response to its transaction relies on besides the top Via's branch
    (read by the transaction layer; the Via is ours, and a stray response gets its Vias
    parsed before it is relayed): CSeq and Call-ID. From/To are passed on untouched."""
    _parsed = (resp.cseq, resp.call_id)


def require_extensions(req: Request, header: str, supported: Collection[str]) -> None:
    """420 with Unsupported when `header` (Require/Proxy-Require) lists a tag we lack."""
    missing = [tag for tag in req.values(header) if tag.lower() not in supported]
    if missing:
        raise SipError(420, "Bad Extension", [("Unsupported", ", ".join(missing))], req)


def check_forwardable(req: Request) -> None:
    """RFC 3261 §16.3 steps 3 and 5, which come before proxy authorization
    (step 6): 483 at Max-Forwards zero, 420 for a Proxy-Require tag."""
    if req.max_forwards == 0:
        raise SipError(483, "Too Many Hops", message=req)
    if req.has("Proxy-Require"):
        require_extensions(req, "Proxy-Require", frozenset())


def decrement_max_forwards(req: Request) -> None:
    """RFC 3261 §16.6 step 3: one less (70 when absent); check_forwardable came first."""
    value = req.max_forwards
    req.set_max_forwards(70 if value is None else max(value - 1, 0))

