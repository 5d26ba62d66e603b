"""Sans-IO SIP core: parsing, the message model, building responses.

Nothing here touches a socket, the event loop or the clock.
"""

from .errors import SipError
from .framing import StreamFramer
from .headers import CSeq, NameAddr, Via, parse_cseq, parse_name_addr, parse_via
from .message import Message, Request, Response
from .parser import DEFAULT_LIMITS, Limits, parse_message, validate
from .responses import REASONS, error_response, make_response
from .uri import URI, parse_uri, unescape
from .validate import check_forwardable, decrement_max_forwards, require_extensions

__all__ = [
    "DEFAULT_LIMITS",
    "REASONS",
    "URI",
    "CSeq",
    "Limits",
    "Message",
    "NameAddr",
    "Request",
    "Response",
    "SipError",
    "StreamFramer",
    "Via",
    "check_forwardable",
    "decrement_max_forwards",
    "error_response",
    "make_response",
    "parse_cseq",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "require_extensions",
    "unescape",
    "validate",
]
