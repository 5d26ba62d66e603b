"""REGISTER rules (RFC 3261 §10.3, RFC 3327 Path, RFC 5626 instance/reg-id), as pure functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgeproxy.sip import Request, SipError
from edgeproxy.sip.errors import bad_request
from edgeproxy.sip.headers import NameAddr
from edgeproxy.sip.uri import URI, unescape
from edgeproxy.state.location import Binding


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    min_expires: int
    max_expires: int
    default_expires: int

    def grant(self, asked: int | None) -> int:
        """The lifetime granted for one asked for (a binding, a publication, a
        subscription): the default when none, 423 with Min-Expires below the
        minimum, capped at the maximum; 0 stays 0 (removal)."""
        if asked is None:
            return self.default_expires
        if 0 < asked < self.min_expires:
            raise SipError(423, "Interval Too Brief", [("Min-Expires", str(self.min_expires))])
        return min(asked, self.max_expires)


@dataclass(frozen=True, slots=True)
class Requested:
    """One Contact of a REGISTER, with the expiry it asked for (after clamping)."""

    contact: str
    expires: int
    q: float
    instance: str | None
    reg_id: int | None
    params: str

    @property
    def identity(self) -> str:
        if self.instance is not None:
            return f"{self.instance}#{self.reg_id}" if self.reg_id is not None else self.instance
        return self.contact


@dataclass(frozen=True, slots=True)
class Origin:
    """Facts about the REGISTER itself, stored with every binding it writes."""

    call_id: str
    cseq: int
    path: tuple[str, ...]
    source: str
    behind_nat: bool
    edge: str
    user_agent: str


def aor_of(uri: URI, domain_of: Callable[[str], str] = str.lower) -> str:
    """The address-of-record of a SIP URI: unescaped user @ its canonical domain
    (our own addresses stand for our default domain)."""
    if not uri.is_sip or not uri.user:
        raise SipError(404, "Not Found")
    return f"{unescape(uri.user)}@{domain_of(uri.host)}"


def requested_contacts(req: Request, policy: ExpiryPolicy) -> list[Requested] | None:
    """The Contacts asked for; None for `Contact: *` (remove all). Raises 400/423."""
    header = req.expires
    if req.contact_star:
        if header != 0 or len(req.get_lines("Contact")) != 1:
            raise bad_request("Contact: * needs Expires: 0 and no other Contact")
        return None
    return [_requested(na, policy.grant(_asked(na, header))) for na in req.contacts]


def _asked(na: NameAddr, header: int | None) -> int | None:
    """A Contact's own expires parameter, else the Expires header (RFC 3261 §10.2.1.1)."""
    value = na.params.get("expires")
    if value is not None and value.isdigit():
        return min(int(value[:11]), 2**32 - 1)
    return header


def _requested(na: NameAddr, expires: int) -> Requested:
    _ = na.uri  # parse now: a malformed Contact URI is a 400 here, not a broken binding later
    q_text = na.params.get("q")
    try:
        q = 1.0 if q_text is None else float(q_text)
    except ValueError:
        raise bad_request("Malformed q-value") from None
    if not 0.0 <= q <= 1.0:
        raise bad_request("q-value out of range")
    reg_id_text = na.params.get("reg-id")
    if reg_id_text is not None and not reg_id_text.isdigit():
        raise bad_request("Malformed reg-id")
    echo = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in na.params.items() if k not in ("expires", "q"))
    return Requested(na.uri_text, expires, q, na.params.get("+sip.instance"),
                     int(reg_id_text) if reg_id_text is not None else None, echo)


def apply_register(current: list[Binding], requested: list[Requested] | None, origin: Origin, now: float,
                   max_contacts: int) -> list[Binding]:
    """The AoR's new bindings. Pure: a store may call it more than once.

    A contact whose binding carries the same Call-ID and a CSeq not lower
    than this one is an out-of-order retransmission and is left alone.
    """
    if requested is None:
        return []
    by_identity = {b.identity: b for b in current}
    for req in requested:
        old = by_identity.get(req.identity)
        if old is not None and old.call_id == origin.call_id and old.cseq >= origin.cseq:
            continue
        if req.expires == 0:
            by_identity.pop(req.identity, None)
            continue
        by_identity[req.identity] = Binding(
            contact=req.contact, expires_at=now + req.expires, q=req.q, call_id=origin.call_id, cseq=origin.cseq,
            path=list(origin.path), instance=req.instance, reg_id=req.reg_id, params=req.params,
            source=origin.source, behind_nat=origin.behind_nat, edge=origin.edge, user_agent=origin.user_agent)
    bindings = list(by_identity.values())
    if len(bindings) > max_contacts:
        raise SipError(503, "Too Many Registered Contacts")
    return bindings


def contact_value(binding: Binding, now: float) -> str:
    """A Contact for the 200: the binding with its remaining time."""
    q = "" if binding.q == 1.0 else f";q={binding.q:g}"
    return f"<{binding.contact}>;expires={binding.remaining(now)}{q}{binding.params}"
