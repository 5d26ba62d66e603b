"""The registrar: REGISTER in, the location store updated, the 200 out."""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable
from email.utils import formatdate

from edgeproxy.sip import Request, Response, SipError, make_response
from edgeproxy.state.errors import StoreError, StoreFull, store_unavailable
from edgeproxy.state.location import Binding, LocationStore
from edgeproxy.transport.base import Source

from .auth import Authenticator
from .bindings import ExpiryPolicy, Origin, aor_of, apply_register, contact_value, requested_contacts


@functools.lru_cache(maxsize=4096)
def _private(host: str) -> bool | None:
    """Whether an IP literal is private; None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_private
    except ValueError:
        return None


def behind_nat(req: Request, source: Source) -> bool:
    """Whether requests for this binding must go to where the REGISTER came
    from: always for a connection (TCP/TLS/WS: the client is only reachable
    through it, its Contact is often a `.invalid` name), else Kamailio
    nathelper's test: the Via or a Contact names another address."""
    if source.transport != "udp" or req.top_via.received is not None:
        return True
    src = source.remote[0]
    for na in req.contacts:
        host = na.uri.host.strip("[]")
        private = _private(host)
        if private is not None and (host != src or (private and not _private(src))):
            return True
    return False


@functools.lru_cache(maxsize=2)
def http_date(second: int) -> str:
    return formatdate(second, usegmt=True)


def origin_of(req: Request, source: Source, instance_id: str, path: tuple[str, ...] = ()) -> Origin:
    return Origin(call_id=req.call_id, cseq=req.cseq.number, path=path,
                  source=f"{source.transport}:{source.remote[0]}:{source.remote[1]}",
                  behind_nat=behind_nat(req, source), edge=instance_id, user_agent=req.get("User-Agent") or "")


def registered(req: Request, bindings: list[Binding], now: float, echo_path: bool = False) -> Response:
    """The 200 to a REGISTER: every current binding with its remaining time."""
    headers = [("Contact", contact_value(b, now)) for b in bindings]
    if echo_path:
        headers += [("Path", p) for p in req.values("Path")]
    headers += [("Supported", "path"), ("Date", http_date(int(now)))]
    return make_response(req, 200, headers=headers)


class Registrar:
    def __init__(self, store: LocationStore, auth: Authenticator | None, policy: ExpiryPolicy, max_contacts: int,
                 instance_id: str, is_local: Callable[[str], bool], domain_of: Callable[[str], str] = str.lower,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.is_local = is_local  # whether a domain is ours: we keep no AoR of anyone else
        self.domain_of = domain_of
        self.auth = auth
        self.policy = policy
        self.max_contacts = max_contacts
        self.instance_id = instance_id
        self.clock = clock

    async def register(self, req: Request, source: Source) -> Response:
        """The response to a REGISTER (errors come back as responses too)."""
        try:
            return await self._register(req, source)
        except SipError as err:
            return make_response(req, err.status, err.reason, err.headers)
        except StoreFull:
            return make_response(req, 503, "Service Unavailable", [("Retry-After", "30")])
        except StoreError:
            return store_unavailable(req)

    async def _register(self, req: Request, source: Source) -> Response:
        if not self.is_local(req.to.uri.host):
            raise SipError(403, "Forbidden (not our domain)")
        aor = aor_of(req.to.uri, self.domain_of)
        if not self.is_local(aor.partition("@")[2]):
            raise SipError(403, "Forbidden (not our domain)")
        if self.auth is not None:
            user = await self.auth.authenticate(req, source_ip=source.remote[0])
            if user != aor.partition("@")[0] and user != aor:
                raise SipError(403, "Forbidden")
        requested = requested_contacts(req, self.policy)
        supports_path = "path" in (v.lower() for v in req.values("Supported"))
        origin = origin_of(req, source, self.instance_id, tuple(req.values("Path")) if supports_path else ())
        if requested is not None and not requested:
            bindings = await self.store.lookup(aor)  # a query: no Contact, nothing changes
        else:
            bindings = await self.store.update(
                aor, lambda current: apply_register(current, requested, origin, self.clock(), self.max_contacts))
        return registered(req, bindings, self.clock(), supports_path)

    async def lookup(self, aor: str) -> list[Binding]:
        """Contacts of an AoR for the proxy, highest q first (with Path and NAT facts)."""
        return await self.store.lookup(aor)
