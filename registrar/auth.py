"""Digest authentication of requests, with credentials and nonce-counts from the stores."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Protocol

from edgeproxy.sip import Request, SipError
from edgeproxy.state.nonces import NonceCounter
from edgeproxy.state.users import UserStore

from .digest import DigestResponse, Nonces, challenge, decoy_ha1, expected_response, parse_authorization


class AuthGuard(Protocol):
    """Brute-force defence (edgeproxy.security.guard.Guard)."""

    def locked(self, user: str) -> bool: ...

    def auth_failed(self, user: str, ip: str) -> None: ...


class Authenticator:
    """401 (registrar) or 407 (proxy) challenges and their verification.

    Every failure — no credentials, unknown user, wrong password, foreign or
    forged nonce, replayed nonce-count — gets the same fresh challenge, so a
    scanner learns nothing about which extensions exist. A wrong digest (for a
    known user or not) is reported to the guard; a user the guard has locked
    fails whatever the digest, so a brute force never learns the password.
    """

    def __init__(self, realm: str, users: UserStore, counter: NonceCounter, secret: bytes, nonce_lifetime: float,
                 algorithms: list[str], clock: Callable[[], float] = time.time, guard: AuthGuard | None = None) -> None:
        self.realm = realm
        self.users = users
        self.counter = counter
        self.secret = secret
        self.algorithms = algorithms
        self.nonces = Nonces(secret, realm, nonce_lifetime)
        self.clock = clock
        self.guard = guard

    def challenge_error(self, proxy: bool, stale: bool = False) -> SipError:
        status, reason, header = (407, "Proxy Authentication Required", "Proxy-Authenticate") if proxy else (
            401, "Unauthorized", "WWW-Authenticate")
        nonce = self.nonces.make(self.clock())
        return SipError(status, reason, [(header, v) for v in challenge(self.realm, nonce, self.algorithms, stale)])

    async def authenticate(self, req: Request, proxy: bool = False, source_ip: str = "") -> str:
        """The authenticated user name, or raise the challenge to answer with."""
        creds = self._credentials(req, proxy)
        if creds is None:
            raise self.challenge_error(proxy)
        state = self.nonces.check(creds.nonce, self.clock())
        if state != "ok" or creds.algorithm not in self.algorithms or creds.qop != "auth":
            raise self.challenge_error(proxy, stale=state == "stale")
        if creds.uri != req.uri_text:
            raise SipError(400, "Authorization URI Does Not Match Request-URI")
        stored = await self.users.get(creds.username)
        ha1 = stored.ha1(creds.algorithm) if stored is not None else None
        known = ha1 is not None
        expected = expected_response(creds, req.method, ha1 or decoy_ha1(self.secret, creds.username, creds.algorithm))
        if not (_same(expected, creds.response) and known):
            if self.guard is not None:
                self.guard.auth_failed(creds.username, source_ip)
            raise self.challenge_error(proxy)
        if self.guard is not None and self.guard.locked(creds.username):
            raise self.challenge_error(proxy)
        try:
            nc = int(creds.nc or "", 16)
        except ValueError:
            raise self.challenge_error(proxy) from None
        if not await self.counter.advance(creds.nonce, nc, self.nonces.lifetime):
            raise self.challenge_error(proxy)  # a replayed nonce-count
        return creds.username

    def _credentials(self, req: Request, proxy: bool) -> DigestResponse | None:
        """Our realm's Digest credentials among the request's (there may be several)."""
        for value in req.get_lines("Proxy-Authorization" if proxy else "Authorization"):
            creds = parse_authorization(value)
            if creds is not None and creds.realm == self.realm:
                return creds
        return None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
