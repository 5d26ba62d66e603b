"""Lexing shared by every structured header: commas, parameters, quotes.

All functions work on `str` header values that were unfolded already, are
tolerant of the LWS RFC 3261 allows around separators, and raise the typed
400 on anything else. Each has a fast path for the plain shape real phones
send, and falls back to the general scanner otherwise.
"""

from __future__ import annotations

from .chars import TOKEN, is_token
from .errors import bad_request

# Unquoted generic-param values are tokens or hosts (IPv6 references included).
_GEN_VALUE = TOKEN + "[]:"
_PLAIN_PARAMS = TOKEN + ";="  # no quotes, no LWS, no IPv6: the fast path

Params = dict[str, "str | None"]


def quoted_end(text: str, start: int) -> int:
    """Index just past the quoted-string that opens at text[start]. A backslash escapes
    the character after it: a quote ends the string when an even run of backslashes
    precedes it (found with str.find, not a loop over characters)."""
    i = start + 1
    while True:
        q = text.find('"', i)
        if q < 0:
            raise bad_request("Unterminated quoted string")
        b = q
        while b > i and text[b - 1] == "\\":
            b -= 1
        if (q - b) % 2 == 0:
            return q + 1
        i = q + 1


def unquote(text: str) -> str:
    """Value of a quoted-string (quotes removed, quoted-pairs resolved)."""
    if len(text) < 2 or text[0] != '"':
        return text
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out = []
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "\\" and i + 1 < len(inner):
            i += 1
            c = inner[i]
        out.append(c)
        i += 1
    return "".join(out)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_commas(value: str) -> list[str]:
    """Split a multi-value header at commas outside quotes and <...>."""
    if "," not in value:
        if not value.strip():
            raise bad_request("Empty header value")
        return [value.strip()]
    if '"' not in value and "<" not in value:
        parts = value.split(",")
    else:
        parts = []
        start = i = 0
        while True:  # from comma to comma, skipping what quotes and <...> enclose
            comma = value.find(",", i)
            end = comma if comma >= 0 else len(value)
            quote, angle = value.find('"', i, end), value.find("<", i, end)
            if quote < 0 and angle < 0:
                if comma < 0:
                    break
                parts.append(value[start:comma])
                start = i = comma + 1
            elif angle < 0 or 0 <= quote < angle:
                i = quoted_end(value, quote)
            else:
                close = value.find(">", angle)
                if close < 0:
                    raise bad_request("Unbalanced angle brackets")
                i = close + 1
        parts.append(value[start:])
    items = [p.strip() for p in parts]
    if "" in items:
        raise bad_request("Empty element in header list")
    return items


def parse_params(text: str) -> Params:
    """Parse `;name[=value]` repeated; text is empty or starts with ';'.

    Names are lower-cased (they are case-insensitive); values keep their
    spelling, quoted values keep their quotes.
    """
    if not text:
        return {}
    if text[0] == ";" and not text.strip(_PLAIN_PARAMS):
        params: Params = {}
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            if not name or (eq and (not value or "=" in value)):
                raise bad_request("Malformed parameter")
            params[name.lower()] = value if eq else None
        return params
    return _parse_params_slow(text.strip())


def _parse_params_slow(text: str) -> Params:
    params: Params = {}
    if not text:
        return params
    if text[0] != ";":
        raise bad_request("Garbage before parameters")
    i = 1
    n = len(text)
    while True:
        j = i
        while j < n and text[j] not in ";=":
            if text[j] == '"':
                raise bad_request("Quote in parameter name")
            j += 1
        name = text[i:j].strip()
        if not is_token(name):
            raise bad_request("Malformed parameter")
        if j < n and text[j] == "=":
            k = j + 1
            while k < n and text[k] in " \t":
                k += 1
            if k < n and text[k] == '"':
                end = quoted_end(text, k)
                value = text[k:end]
            else:
                end = k
                while end < n and text[end] != ";":
                    end += 1
                value = text[k:end].rstrip()
                if not value or value.strip(_GEN_VALUE):
                    raise bad_request("Malformed parameter value")
            rest = end
            params[name.lower()] = value
        else:
            rest = j
            params[name.lower()] = None
        while rest < n and text[rest] in " \t":
            rest += 1
        if rest >= n:
            return params
        if text[rest] != ";":
            raise bad_request("Malformed parameter list")
        i = rest + 1


def format_params(params: Params) -> str:
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params.items()])
