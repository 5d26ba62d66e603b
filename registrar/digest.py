"""HTTP Digest for SIP (RFC 7616, RFC 8760): challenges and verification, sans-IO.

Nonces are stateless: `<time>.<random>.<hmac>` where the HMAC (keyed with a
secret every instance shares) covers the time, the random part and the
realm. Any instance verifies any nonce without asking anyone, and a nonce
older than its lifetime is answered with `stale=true`. Replays within the
lifetime are caught by the nonce-count store.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from edgeproxy.sip.errors import bad_request
from edgeproxy.sip.ids import random_hex
from edgeproxy.sip.tokens import split_commas, unquote

HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def hexdigest(algorithm: str, text: str) -> str:
    return HASHES[algorithm](text.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class DigestResponse:
    """The parameters of a client's Authorization / Proxy-Authorization."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def parse_authorization(value: str) -> DigestResponse | None:
    """The Digest credentials in a header value; None for another scheme.

    Raises the typed 400 for a Digest header missing what it must carry.
    """
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    for item in split_commas(rest):
        name, eq, raw = item.partition("=")
        if not eq:
            raise bad_request("Malformed Authorization parameter")
        params[name.strip().lower()] = unquote(raw.strip())
    try:
        return DigestResponse(
            username=params["username"], realm=params["realm"], nonce=params["nonce"], uri=params["uri"],
            response=params["response"].lower(), algorithm=params.get("algorithm", "MD5").upper(),
            qop=params.get("qop"), nc=params.get("nc"), cnonce=params.get("cnonce"), opaque=params.get("opaque"),
        )
    except KeyError as missing:
        raise bad_request(f"Authorization without {missing.args[0]}") from None


def expected_response(creds: DigestResponse, method: str, ha1: str) -> str:
    h = creds.algorithm
    ha2 = hexdigest(h, f"{method}:{creds.uri}")
    if creds.qop:
        return hexdigest(h, f"{ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:{creds.qop}:{ha2}")
    return hexdigest(h, f"{ha1}:{creds.nonce}:{ha2}")


class Nonces:
    def __init__(self, secret: bytes, realm: str, lifetime: float) -> None:
        self.secret = secret
        self.realm = realm
        self.lifetime = lifetime

    def _mac(self, stamp: str, salt: str) -> str:
        return hmac.new(self.secret, f"{stamp}.{salt}:{self.realm}".encode(), hashlib.sha256).hexdigest()[:32]

    def make(self, now: float) -> str:
        stamp, salt = f"{int(now):x}", random_hex(8)
        return f"{stamp}.{salt}.{self._mac(stamp, salt)}"

    def check(self, nonce: str, now: float) -> str:
        """'ok', 'stale' (ours but expired) or 'bad' (not ours)."""
        parts = nonce.split(".")
        if len(parts) != 3 or not hmac.compare_digest(parts[2], self._mac(parts[0], parts[1])):
            return "bad"
        try:
            issued = int(parts[0], 16)
        except ValueError:
            return "bad"
        return "ok" if 0 <= now - issued <= self.lifetime else "stale"


def challenge(realm: str, nonce: str, algorithms: list[str], stale: bool = False) -> list[str]:
    """WWW-Authenticate / Proxy-Authenticate values, one per algorithm, preferred first (RFC 8760)."""
    tail = ', stale=true' if stale else ""
    return [f'Digest realm="{realm}", nonce="{nonce}", algorithm={a}, qop="auth"{tail}' for a in algorithms]


def decoy_ha1(secret: bytes, username: str, algorithm: str) -> str:
    """An HA1 for a user that does not exist: verification runs the same code
    and fails the same way, so unknown users cannot be told from wrong passwords."""
    size = 64 if algorithm == "SHA-256" else 32
    return hmac.new(secret, f"decoy:{username}".encode(), hashlib.sha256).hexdigest()[:size]
