"""RFC 3261 character classes, as translate() tables for C-speed checks."""

from __future__ import annotations

import string

_ALNUM = string.ascii_letters + string.digits
TOKEN = _ALNUM + "-.!%*_+`'~"
# URI user part: unreserved / escaped / user-unreserved
_UNRESERVED = _ALNUM + "-_.!~*'()"
USER = _UNRESERVED + "%&=+$,;?/"
PASSWORD = _UNRESERVED + "%&=+$,"
HOST = _ALNUM + "-._"
PARAM = _UNRESERVED + "%[]/:&+$"  # paramchar for uri-parameters
HEADER_CHARS = _UNRESERVED + "%[]/?:+$="

_TOKEN_BYTES = TOKEN.encode()


def only(text: str, allowed: str) -> bool:
    """True if every character of text is in allowed (and text is non-empty)."""
    return bool(text) and not text.strip(allowed)


def is_token(text: str) -> bool:
    return bool(text) and not text.strip(TOKEN)


def is_token_bytes(data: bytes) -> bool:
    return bool(data) and not data.translate(None, _TOKEN_BYTES)
