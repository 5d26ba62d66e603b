"""Header names: canonical keys, compact forms and the spelling we write.

A key is the lower-case long form of a name (`"via"`, `"call-id"`); every
lookup in the message model goes through a key, so `v`, `VIA` and `Via`
are one header.
"""

from __future__ import annotations

from .chars import is_token_bytes
from .errors import bad_request
from .memo import parsed_once

COMPACT: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# How we spell a header we write; anything absent is title-cased per word.
_DISPLAY: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    "rseq": "RSeq",
    "rack": "RAck",
    "mime-version": "MIME-Version",
}

_KNOWN = (
    "via", "from", "to", "call-id", "cseq", "contact", "max-forwards", "route",
    "record-route", "content-length", "content-type", "expires", "path", "event",
    "authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate",
    "user-agent", "server", "allow", "supported", "require", "proxy-require",
    "unsupported", "subscription-state", "accept", "allow-events", "min-expires",
    "sip-etag", "sip-if-match", "session-expires", "timestamp",
)

# Exact spellings seen on the wire → key. A folded continuation line starts
# with LWS and so never matches: the parser's slow path sees it. Grown only up to _CACHE_LIMIT so
# attacker-chosen names cannot make it grow without bound.
_CACHE: dict[bytes, str] = {}
_CACHE_LIMIT = 4096


def display_name(key: str) -> str:
    name = _DISPLAY.get(key)
    if name is None:
        name = "-".join(part.capitalize() for part in key.split("-"))
    return name


# `b"Name: "` for writing a header line of this key.
line_prefix = parsed_once(lambda key: display_name(key).encode() + b": ", _CACHE_LIMIT)


def _seed() -> None:
    for key in list(_KNOWN) + list(COMPACT.values()):
        for spelling in (key, key.upper(), display_name(key)):
            _CACHE[spelling.encode()] = key
    for short, key in COMPACT.items():
        _CACHE[short.encode()] = key
        _CACHE[short.upper().encode()] = key


_seed()


# Key for a spelling seen before, else None: the parser's per-line lookup,
# bound once because it runs for every header line of every message.
cached_key = _CACHE.get


# The methods this element knows: what Allow lists, and the spellings parsers check at once.
METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE",
           "REFER", "INFO", "UPDATE", "PRACK")


def key_of_bytes(raw: bytes) -> str:
    """Key for the bytes before a header's colon (trailing LWS allowed)."""
    key = _CACHE.get(raw)
    if key is not None:
        return key
    name = raw.rstrip(b" \t")
    if not name or not is_token_bytes(name):
        raise bad_request("Malformed header name")
    lower = name.lower().decode("ascii")
    key = COMPACT.get(lower, lower)
    if len(_CACHE) < _CACHE_LIMIT:
        _CACHE[raw] = key
    return key


def _key(name: str) -> str:
    lower = name.lower()
    return COMPACT.get(lower, lower)


# Key for a header name given by code (`"Record-Route"`, `"m"`): a few dozen spellings.
key_of = parsed_once(_key, _CACHE_LIMIT)
