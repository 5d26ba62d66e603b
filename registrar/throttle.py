"""REGISTER throttling: the edge as a mid-registrar (OpenSIPS mid_registrar).

Phones behind NAT refresh every minute or so to keep their pinhole open;
the upstream registrar need not see each refresh.

- mirror:  every REGISTER goes upstream (with our Path); the bindings the
           upstream 200 confirms are recorded here too, for routing.
- contact: clients are granted `client_expires`, the upstream is asked for
           `upstream_expires`; a refresh that changes no contact is answered
           here while the upstream binding outlives the client's next refresh.
- aor:     the upstream sees one registration per AoR, with the edge's own
           Contact; the clients' contacts stay here, and a call to the edge's
           Contact is forked to them by the proxy.

Every decision reads the state store (bindings and what was registered
upstream), so any instance answers a refresh another one forwarded. Digest
challenges from upstream reach the client untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from edgeproxy.observability.metrics import REGISTERS
from edgeproxy.sip import Request, Response, make_response
from edgeproxy.sip.headers import parse_name_addr
from edgeproxy.sip.ids import new_call_id, new_tag
from edgeproxy.sip.message import decode, line_value
from edgeproxy.sip.names import display_name
from edgeproxy.state.location import LocationStore
from edgeproxy.state.upstream import UpstreamRegistration, UpstreamStore
from edgeproxy.transport.base import Source

from .bindings import ExpiryPolicy, Origin, Requested, aor_of, apply_register, requested_contacts
from .service import origin_of, registered

USER_SAFE = "-_.!~*'()&=+$,;?/"  # RFC 3261 user: unreserved and user-unreserved, the rest %-escaped
# Headers of an upstream answer that are the client transaction's own, not passed on.
_OWN = frozenset({"via", "from", "to", "call-id", "cseq", "content-length", "path", "record-route"})


@dataclass(slots=True)
class Forward:
    """A REGISTER to send upstream for a client's one, and what to do with the answer."""

    request: Request  # without our Via: the sender adds it
    client: Request
    aor: str
    requested: list[Requested] | None
    origin: Origin


class Throttle:
    def __init__(self, mode: str, client_policy: ExpiryPolicy, upstream_expires: int, location: LocationStore,
                 upstream: UpstreamStore, instance_id: str, domain_of: Callable[[str], str],
                 path: Callable[[Source], str], edge_contact: Callable[[str], str], max_contacts: int = 10,
                 clock: Callable[[], float] = time.time) -> None:
        self.mode = mode
        self.policy = client_policy if mode != "mirror" else ExpiryPolicy(1, 2**31 - 1, upstream_expires)
        self.upstream_expires = upstream_expires
        self.location = location
        self.upstream = upstream
        self.instance_id = instance_id
        self.domain_of = domain_of
        self.path = path  # our Path value for a client at this source
        self.edge_contact = edge_contact  # aor mode: our Contact URI for a user part
        self.max_contacts = max_contacts
        self.clock = clock
        # refresh upstream this long before the client's next refresh would find it lapsed
        self.margin = max(1.0, client_policy.default_expires * 0.2)

    async def plan(self, req: Request, source: Source) -> Response | Forward:
        """Our answer to a client's REGISTER, or what to send upstream first."""
        REGISTERS.labels("received").inc()
        aor = aor_of(req.to.uri, self.domain_of)
        requested = requested_contacts(req, self.policy)
        origin = origin_of(req, source, self.instance_id)
        if self.mode == "mirror":
            return self._forward(self._relayed(req, source), req, aor, requested, origin)
        now = self.clock()
        if requested is not None and not requested:
            return registered(req, await self.location.lookup(aor), now)  # a query
        up = await self.upstream.get(aor)
        granted = max((r.expires for r in requested or []), default=0)
        fresh = up is not None and up.until - now > granted + self.margin
        if self.mode == "contact":
            removing = requested is None or any(r.expires == 0 for r in requested)
            known = up is not None and all(r.contact in up.contacts for r in requested or [])
            if fresh and known and not removing:
                return await self._absorb(req, aor, requested, origin)
            return self._forward(self._relayed(req, source, self.upstream_expires), req, aor, requested, origin)
        current = await self.location.lookup(aor)
        left = apply_register(current, requested, origin, now, self.max_contacts)
        if (left and fresh) or (not left and up is None):
            return await self._absorb(req, aor, requested, origin)
        expires = self.upstream_expires if left else 0
        return self._forward(self._edge_register(req, aor, up, expires), req, aor, requested, origin)

    async def answered(self, fwd: Forward, resp: Response) -> Response:
        """The client's answer once the upstream answered our REGISTER."""
        if not 200 <= resp.status < 300:
            return _passed_on(fwd.client, resp)
        now = self.clock()
        granted = _granted(fwd.request, resp)
        requested = fwd.requested
        if self.mode == "mirror" and requested is not None:
            requested = [_with_expires(r, granted.get(r.contact, r.expires)) for r in requested]
        bindings = await self.location.update(
            fwd.aor, lambda current: apply_register(current, requested, fwd.origin, self.clock(), self.max_contacts))
        if self.mode == "mirror":
            return _passed_on(fwd.client, resp)
        ours = [granted[c] for c in _contacts(fwd.request) if granted.get(c)]
        if not bindings or not ours:
            await self.upstream.delete(fwd.aor)
        else:
            await self.upstream.put(fwd.aor, UpstreamRegistration(
                now + min(ours), [b.contact for b in bindings] if self.mode == "contact" else [],
                fwd.request.call_id, fwd.request.cseq.number))
        return registered(fwd.client, bindings, now)

    async def _absorb(self, req: Request, aor: str, requested: list[Requested] | None, origin: Origin) -> Response:
        REGISTERS.labels("absorbed").inc()
        bindings = await self.location.update(
            aor, lambda current: apply_register(current, requested, origin, self.clock(), self.max_contacts))
        return registered(req, bindings, self.clock())

    def _forward(self, request: Request, client: Request, aor: str, requested: list[Requested] | None,
                 origin: Origin) -> Forward:
        REGISTERS.labels("forwarded").inc()
        return Forward(request, client, aor, requested, origin)

    def _relayed(self, req: Request, source: Source, expires: int | None = None) -> Request:
        """The client's REGISTER, passed on with our Path; its non-zero expiries
        replaced by `expires` when given (contact mode)."""
        fwd = req.copy()
        fwd.insert("Path", self.path(source))
        if "path" not in (v.lower() for v in req.values("Supported")):
            fwd.append("Supported", "path")
        if expires is not None:
            if req.expires:
                fwd.set("Expires", str(expires))
            if not req.contact_star:
                values = []
                for na in req.contacts:
                    if na.params.get("expires") not in (None, "0"):
                        na.params["expires"] = str(expires)
                    values.append(str(na))
                fwd.remove("Contact")
                for value in values:
                    fwd.append("Contact", value)
        return fwd

    def _edge_register(self, req: Request, aor: str, up: UpstreamRegistration | None, expires: int) -> Request:
        """aor mode: the edge's own registration of the AoR (the client's credentials
        ride along, so an upstream challenge is the client's to answer)."""
        call_id = up.call_id if up is not None else new_call_id()
        cseq = up.cseq + 1 if up is not None else 1
        user = aor.rpartition("@")[0]
        to = f"<{req.to.uri_text}>"
        headers = [("Max-Forwards", "70"), ("From", f"{to};tag={new_tag()}"), ("To", to), ("Call-ID", call_id),
                   ("CSeq", f"{cseq} REGISTER"), ("Contact", f"<{self.edge_contact(quote(user, safe=USER_SAFE))}>"),
                   ("Expires", str(expires))]
        headers += [(name, value) for name in ("Authorization", "Proxy-Authorization")
                    for value in req.get_lines(name)]
        return Request.build("REGISTER", req.uri_text, headers)


def _contacts(req: Request) -> list[str]:
    return [] if req.contact_star else [na.uri_text for na in req.contacts]


def _granted(sent: Request, resp: Response) -> dict[str, int]:
    """Contact URI → expiry the upstream granted, for the contacts we sent."""
    granted: dict[str, int] = {}
    header = resp.expires
    for value in resp.values("Contact"):
        na = parse_name_addr(value)
        raw = na.params.get("expires")
        expires = int(raw) if raw is not None and raw.isdigit() else header
        if expires is not None:
            granted[na.uri_text] = expires
    return {c: granted[c] for c in _contacts(sent) if c in granted}


def _with_expires(r: Requested, expires: int) -> Requested:
    return Requested(r.contact, expires, r.q, r.instance, r.reg_id, r.params)


def _passed_on(client: Request, resp: Response) -> Response:
    """The upstream's answer as the client's: status and headers untouched
    (challenges included), dialog headers the client's own."""
    headers = [(display_name(key), decode(line_value(line))) for key, line in resp.headers() if key not in _OWN]
    return make_response(client, resp.status, resp.reason, headers)
