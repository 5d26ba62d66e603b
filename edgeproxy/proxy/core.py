"""The stateful proxy (RFC 3261 §16): routing policy, branches, responses, CANCEL.

One `ProxyContext` per proxied server transaction holds its branches (one
client transaction each). Policy, in one sentence: requests from clients
for our domains go to the dispatcher's backends; requests from trusted
backends, and requests between our users when no backend is configured,
go to the callee's registered contacts (forked in parallel); foreign
domains only for trusted sources (never an open relay).
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from edgeproxy.dispatcher.backends import Backend, BackendSet
from edgeproxy.dispatcher.dns import SipResolver, literal_hop
from edgeproxy.observability.logging import about, debug_about
from edgeproxy.sip import Request, Response, SipError, make_response, parse_uri
from edgeproxy.sip.destinations import response_address
from edgeproxy.sip.headers import parse_name_addr, shared_name_addr
from edgeproxy.sip.transaction import T1, Action, ClientInvite, ClientTransaction, ServerTransaction, State, Transaction
from edgeproxy.sip.transactions import TransactionLayer
from edgeproxy.sip.uri import URI, unescape
from edgeproxy.sip.validate import check_forwardable, decrement_max_forwards
from edgeproxy.state.location import Binding, LocationStore
from edgeproxy.state.users import UserStore
from edgeproxy.transport.base import RELIABLE, Source, Target
from registrar.bindings import aor_of

from . import routing
from .routing import Hop

log = structlog.get_logger(__name__)

FAILOVER_STATUSES = frozenset({408, 500, 503})
MAX_CALLS = 1_000_000
MAX_CALL_AGE = 4 * 3600.0


@dataclass(slots=True)
class Branch:
    """One forwarded copy of the request (one client transaction)."""

    ctx: ProxyContext
    hop: Hop
    backend: Backend | None = None
    behind_nat: bool = False  # the callee is behind NAT: alias its Contact in responses
    txn: ClientTransaction | None = None
    final: Response | None = None
    provisional: bool = False
    cancel_pending: bool = False
    timer_c: float = 0.0  # when this INVITE branch gives up (RFC 3261 Timer C), reset by provisionals
    key: int = 0  # its entry among the INVITE branches waiting for a final answer
    cancelled: bool = False  # Timer C sent it a CANCEL


@dataclass(slots=True)
class ProxyContext:
    server: ServerTransaction
    request: Request  # as routed (Routes of ours removed, Max-Forwards decremented); branches send copies
    source: Source
    trusted: bool  # the source is a backend or a trusted network (asked once per request)
    branches: list[Branch] = field(default_factory=list)
    loop_hash: str = ""  # RFC 3261 §16.6 step 8, part of every branch we create
    followed_route: bool = False  # a Route of ours was removed: the request follows a recorded route set
    tried: set[str] = field(default_factory=set)  # backends already tried (failover)
    answered: bool = False  # a 2xx went upstream
    cancelled: bool = False
    done: bool = False  # a final response went upstream
    live: int = 1  # its transactions (the server's, then each branch's) that have not ended

    @property
    def pending(self) -> list[Branch]:
        return [b for b in self.branches if b.final is None]


@dataclass(slots=True)
class Identity:
    """How this instance names itself: for Via (its own address, so responses
    come back here) and for Record-Route (`advertise`, any instance answers)."""

    advertise: str
    addresses: dict[str, tuple[str, int]]  # transport → (host, port) we listen on
    is_ours: Callable[[URI], bool]  # one of our addresses (a Route of ours)
    local_domain: Callable[[str], bool]  # a domain whose users we route to
    domain_of: Callable[[str], str]  # the domain an AoR lives in (see app.domain_of)
    user_agent: str = ""  # Server header on the responses we make; empty: none
    # our header values, made once: transport → Via up to the branch value; (transport, double) → Record-Route
    _vias: dict[str, bytes] = field(default_factory=dict)
    _record_routes: dict[tuple[str, bool], bytes] = field(default_factory=dict)

    def response(self, req: Request, status: int, reason: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> Response:
        """A response made here (not relayed), named as configured."""
        resp = make_response(req, status, reason, headers or ())
        if self.user_agent:
            resp.append("Server", self.user_agent)
        return resp

    def via_host(self, transport: str) -> tuple[str, int]:
        return self.addresses.get(transport) or next(iter(self.addresses.values()))

    def via(self, transport: str, branch: str, rport: bool = True) -> bytes:
        """Our Via value for a request sent over `transport` (its responses come back to
        this address); rport asked for unless the request must not be answered (an ACK)."""
        prefix = self._vias.get(transport)
        if prefix is None:
            host, port = self.via_host(transport)
            sent_by = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            prefix = self._vias[transport] = f"SIP/2.0/{transport.upper()} {sent_by};branch=".encode()
        value = prefix + branch.encode()
        return value + b";rport" if rport else value

    def sent_bys(self) -> set[str]:
        return {f"{h}:{p}".lower() if ":" not in h else f"[{h}]:{p}" for h, p in self.addresses.values()}

    def record_route_port(self, transport: str) -> int:
        return self.via_host(transport)[1]

    def record_route(self, transport: str, double: bool) -> bytes:
        """Our Record-Route value for one side of the proxy (`double`: RFC 5658's r2)."""
        value = self._record_routes.get((transport, double))
        if value is None:
            value = self._record_routes[transport, double] = routing.record_route(
                self.advertise, self.record_route_port(transport), transport, double).encode()
        return value


class ProxyCore:
    def __init__(self, transactions: TransactionLayer, run: Callable[[list[Action]], None],
                 send: Callable[[bytes, Target], None], now: Callable[[], float], identity: Identity,
                 trusted: Callable[[object], bool], location: LocationStore, users: UserStore | None,
                 dispatcher: BackendSet | None, resolver: SipResolver, branch_timeout: float = 5.0,
                 invite_timeout: float = 180.0, on_call: Callable[[Request, str, str], None] | None = None,
                 connected: Callable[[Hop], bool] = lambda hop: True) -> None:
        self.transactions = transactions
        # whether this instance holds a connection to a TCP/TLS/WS hop (it cannot open one to a client)
        self.connected = connected
        # a call's progress (early, confirmed, terminated) and its backend's URI: BLF, the dialog store
        self.on_call = on_call
        self.run = run
        self.send = send
        self.now = now
        self.identity = identity
        self.trusted = trusted
        self.location = location
        self.users = users
        self.dispatcher = dispatcher
        self.branch_timeout = branch_timeout
        self.resolver = resolver
        self._sent_bys = identity.sent_bys()
        # Call-ID → (backend or None, start) of the calls set up through this instance and not
        # ended yet, oldest first: least-busy counts them per backend, a drain waits for them.
        # A call whose BYE never crosses us is forgotten after MAX_CALL_AGE; at most MAX_CALLS.
        self.calls: collections.OrderedDict[str, tuple[Backend | None, float]] = collections.OrderedDict()
        self._watched: collections.deque[tuple[float, Branch]] = collections.deque()  # backend branches
        self.invite_timeout = invite_timeout
        # Timer C: the queues hold only keys, the dict only branches still waiting for a final
        # answer, so finished calls are not kept alive for minutes. Every INVITE branch is queued
        # once, at now + invite_timeout (in order: a deque); a provisional only moves
        # `branch.timer_c`, and the rare branch whose entry comes due before its timer (it rang)
        # or that waits for its CANCEL goes to the heap.
        self._timer_c: collections.deque[tuple[float, int]] = collections.deque()
        self._timer_c_moved: list[tuple[float, int]] = []
        self._invites: dict[int, Branch] = {}
        self._seq = itertools.count(1)

    # -- requests ------------------------------------------------------------------
    async def route(self, server: ServerTransaction, req: Request) -> None:
        """Forward a request for which this instance is not the UAS (answers errors itself)."""
        source: Source = server.peer
        try:
            followed, hash_ = self._prepared(req)
            ctx = ProxyContext(server, req, source, self.trusted(source), loop_hash=hash_, followed_route=followed)
            server.context = ctx
            if req.method == "BYE":
                self._call_state(ctx, "terminated")
            await self._dispatch(ctx)
        except SipError as err:
            if server.state in (State.TRYING, State.PROCEEDING):
                self._respond(server, self.identity.response(req, err.status, err.reason, err.headers))

    def _prepared(self, req: Request) -> tuple[bool, str]:
        """RFC 3261 §16.3 checks and §16.4 Route pre-processing, in place: the server
        transaction answers from the lines routing leaves alone (Via, From, To, Call-ID,
        CSeq), and each branch forwards a copy. Returns (a Route of ours was removed,
        the loop hash, taken before that)."""
        check_forwardable(req)
        hash_ = routing.loop_hash(req)
        decrement_max_forwards(req)
        if routing.is_loop(req, self._sent_bys, hash_):
            raise SipError(482, "Loop Detected")
        return routing.preprocess_routes(req, self.identity.is_ours), hash_

    async def _dispatch(self, ctx: ProxyContext) -> None:
        req = ctx.request
        followed, trusted = ctx.followed_route, ctx.trusted
        honoured = followed or trusted  # may a route set or an alias in it direct us?
        if req.has("Route") or (followed and req.to.tag is not None) or (honoured and routing.ALIAS in req.uri.params):
            if not honoured:
                raise SipError(403, "Forbidden (Route from outside)")
            dest = self._route_destination(req)
            if isinstance(dest, Hop) and dest.transport in RELIABLE and not self.connected(dest):
                binding = await self._current_binding(req)
                if binding is not None:
                    hop, _, routes, behind_nat = self._binding_route(binding)
                    await self._forward(ctx, hop, None, routes, behind_nat)
                    return
            await self._forward(ctx, dest)
            return
        routing.take_alias(req)  # an alias nobody may make us honour: dropped
        if not (self.identity.is_ours(req.uri) or self.identity.local_domain(req.uri.host)):
            if not trusted:
                raise SipError(403, "Forbidden (not our domain)")
            await self._forward(ctx, req.uri)
            return
        if req.uri.user is None:
            raise SipError(404, "Not Found")
        if self.dispatcher and not trusted:
            self._try_backend(ctx)
            return
        await self._to_user(ctx)

    async def _to_user(self, ctx: ProxyContext) -> None:
        """Fork in parallel to every registered contact of the Request-URI's user."""
        uri = ctx.request.uri
        bindings = await self.location.lookup(aor_of(uri, self.identity.domain_of))
        if not bindings:
            # 480 tells a backend the user exists but is offline; anyone else learns nothing
            known = (self.users is not None and ctx.trusted
                     and await self.users.get(unescape(uri.user or "")) is not None)
            raise SipError(480, "Temporarily Unavailable") if known else SipError(404, "Not Found")
        for binding in bindings:
            await self._forward(ctx, *self._binding_route(binding))

    async def _current_binding(self, req: Request) -> Binding | None:
        """The registration of the in-dialog target whose connection is gone: a client that
        reconnected (to this instance after a failover, or from a new port) is reached on its
        new connection. The target is the To user's binding with the Request-URI's contact."""
        to = req.to.uri
        if to.user is None or not self.identity.local_domain(to.host):
            return None
        target = req.uri
        for binding in await self.location.lookup(aor_of(to, self.identity.domain_of)):
            contact = parse_uri(binding.contact)
            if contact.user == target.user and contact.host.lower() == target.host.lower():
                return binding
        return None

    @staticmethod
    def _binding_route(binding: Binding) -> tuple[Hop | URI, str, list[str], bool]:
        """Destination, Request-URI, Route set, NAT flag for one binding (Path first, then NAT, then Contact)."""
        if binding.path:
            return shared_name_addr(binding.path[0]).uri, binding.contact, binding.path, False
        if binding.behind_nat and binding.source:
            return routing.hop_of_source(binding.source), binding.contact, [], True
        return parse_uri(binding.contact), binding.contact, [], False

    def _try_backend(self, ctx: ProxyContext) -> bool:
        """Send to the next usable backend not tried yet; False when none is left."""
        assert self.dispatcher is not None
        backend = self.dispatcher.select(ctx.request, ctx.tried)
        if backend is None:
            if not ctx.branches:
                raise SipError(503, "Service Unavailable (no backend)", [("Retry-After", "5")])
            return False
        ctx.tried.add(backend.uri)
        self._start_branch(ctx, backend.hop, None, [], backend=backend)
        return True

    async def _forward(self, ctx: ProxyContext, dest: Hop | URI, ruri: str | None = None,
                       routes: list[str] | None = None, behind_nat: bool = False) -> None:
        """One branch toward dest: a known address, or a URI located per RFC 3263."""
        if isinstance(dest, URI):
            hop = literal_hop(dest)  # an IP address (a Contact, our Record-Route): no await
            if hop is None:
                hops = await self.resolver.resolve(dest)
                if not hops:
                    raise SipError(478, "Unresolvable Destination")
                hop = hops[0]
            dest = hop
        self._start_branch(ctx, dest, ruri, routes or [], behind_nat=behind_nat)

    def _start_branch(self, ctx: ProxyContext, hop: Hop, ruri: str | None, routes: list[str],
                      backend: Backend | None = None, behind_nat: bool = False) -> None:
        req = ctx.request.copy()
        if ruri is not None:
            req.uri = ruri
        for value in reversed(routes):
            req.insert("Route", value)
        inbound = ctx.source.transport
        if routing.needs_record_route(ctx.request):
            double = inbound != hop.transport
            if double:
                req.insert("Record-Route", self.identity.record_route(inbound, True))
            req.insert("Record-Route", self.identity.record_route(hop.transport, double))
            if not ctx.trusted:
                self._alias_contact(req, ctx.source.transport, *ctx.source.remote)
        ours = routing.branch(ctx.loop_hash)
        req.insert("Via", self.identity.via(hop.transport, ours))
        branch = Branch(ctx, hop, backend, behind_nat)
        ctx.branches.append(branch)
        if req.method == "INVITE" and (backend is not None or req.to.tag is None):
            if backend is not None:
                backend.calls += 1
            self.calls[req.call_id] = (backend, self.now())
            if len(self.calls) > MAX_CALLS:
                self._call_ended(next(iter(self.calls)))
        target = Target(hop.transport, (hop.host, hop.port))
        txn, actions = self.transactions.start_client(req, hop.transport in RELIABLE, self.now(), target, ours)
        branch.txn = txn
        txn.context = branch
        ctx.live += 1
        self.run(actions)
        if backend is not None:
            self._watched.append((self.now() + self.branch_timeout, branch))
        if req.method == "INVITE":
            self._arm_timer_c(branch)

    def _arm_timer_c(self, branch: Branch) -> None:
        """Start Timer C, or push it later (a provisional)."""
        branch.timer_c = self.now() + self.invite_timeout
        if not branch.key:
            branch.key = next(self._seq)
            self._invites[branch.key] = branch
            self._timer_c.append((branch.timer_c, branch.key))

    def expire(self, now: float) -> None:
        """The proxy's own timers, run on the app's timer tick."""
        self._expire_silent_backends(now)
        self._expire_timer_c(now)
        while self.calls:
            call_id, (_, started) = next(iter(self.calls.items()))
            if now - started < MAX_CALL_AGE:
                break
            self._call_ended(call_id)

    def _expire_silent_backends(self, now: float) -> None:
        """Kamailio's fr_timer: a backend that has not answered at all by now is failed over
        (deadlines are in creation order: a deque suffices)."""
        watched = self._watched
        while watched and watched[0][0] <= now:
            _, branch = watched.popleft()
            if branch.provisional or branch.final is not None or branch.txn is None or branch.txn.terminated:
                continue
            self._give_up(branch)

    def _expire_timer_c(self, now: float) -> None:
        """RFC 3261 §16.8: a ringing branch is CANCELled; one that never answered, or did
        not end within 64×T1 of our CANCEL, is over (408)."""
        queue, moved = self._timer_c, self._timer_c_moved
        while queue and queue[0][0] <= now:
            self._timer_c_due(queue.popleft()[1], now)
        while moved and moved[0][0] <= now:
            self._timer_c_due(heapq.heappop(moved)[1], now)

    def _timer_c_due(self, key: int, now: float) -> None:
        branch = self._invites.get(key)
        if branch is None or branch.final is not None or branch.txn is None:
            return  # answered
        if branch.timer_c > now:  # a provisional pushed it later: its one entry moves with it
            heapq.heappush(self._timer_c_moved, (branch.timer_c, key))
        elif branch.provisional and not branch.cancelled:
            self._cancel_branch(branch)
            branch.cancelled = True
            branch.timer_c = now + 64 * T1
            heapq.heappush(self._timer_c_moved, (branch.timer_c, key))
        else:
            self._give_up(branch)

    def _give_up(self, branch: Branch) -> None:
        assert branch.txn is not None
        self.transactions.abandon(branch.txn)
        self.on_timeout(branch.txn)
        self.ended(branch.txn)  # abandoned: no Terminated action will say so

    @staticmethod
    def _route_destination(req: Request) -> Hop | URI:
        """Where a request following a route set goes (RFC 3261 §16.6 step 6): its top
        Route; else the address an alias in its Request-URI names; else its Request-URI."""
        if req.has("Route"):
            return shared_name_addr(req.first_value("Route") or "").uri
        return routing.take_alias(req) or req.uri

    @staticmethod
    def _alias_contact(msg: Request | Response, transport: str, ip: str, port: int) -> None:
        """nathelper add_contact_alias, when the Contact is not where packets come from."""
        first = msg.first_value("Contact")
        if first is None or first == "*":
            return
        uri = shared_name_addr(first).uri  # a phone sends the same Contact every time: parsed once
        if routing.ALIAS in uri.params or (uri.host.strip("[]") == ip and routing.hop_for(uri).port == port):
            return
        na = parse_name_addr(first)  # a copy of our own to change
        na.uri = parse_uri(routing.add_contact_alias(na.uri_text, transport, ip, port))
        msg.replace_first_value("Contact", str(na))

    def forward_stateless(self, req: Request, source: Source) -> None:
        """ACK for a 2xx (end to end, no transaction): along the route set, statelessly
        (changed in place: nothing keeps it)."""
        try:
            check_forwardable(req)
            branch = routing.stateless_branch(req)  # of the ACK as received: the same for a retransmission
            decrement_max_forwards(req)
            followed = routing.preprocess_routes(req, self.identity.is_ours)
            if not (followed or self.trusted(source)):
                return
            dest = self._route_destination(req)
            hop = dest if isinstance(dest, Hop) else routing.hop_for(dest)
            if not routing.is_ip(hop.host):
                return  # names need resolution: ACKs to names are not forwarded statelessly
            req.insert("Via", self.identity.via(hop.transport, branch, rport=False))
            self.send(req.to_bytes(), Target(hop.transport, (hop.host, hop.port)))
        except SipError as err:
            debug_about(log, "ACK not forwarded", req, reason=err.reason)

    # -- responses -----------------------------------------------------------------
    def on_response(self, txn: ClientTransaction, resp: Response) -> None:
        branch = txn.context
        if not isinstance(branch, Branch):
            return  # a response to our own request (a CANCEL, a probe): nothing to relay
        ctx = branch.ctx
        if resp.status == 100:
            return
        if branch.backend is not None and self.dispatcher is not None:
            self.dispatcher.call_answered(branch.backend)
        resp.remove_first_value("Via")
        if branch.behind_nat and resp.cseq.method == "INVITE" and resp.status < 300:
            self._alias_contact(resp, branch.hop.transport, branch.hop.host, branch.hop.port)
        if resp.status < 200:
            branch.provisional = True
            if resp.cseq.method == "INVITE":
                self._arm_timer_c(branch)
                if not ctx.done:
                    self._call_state(ctx, "early")
            if branch.cancel_pending:
                self._cancel_branch(branch)
            elif not ctx.done:
                self._respond(ctx.server, resp)
            return
        if resp.status < 300:
            branch.final = resp
            self._invites.pop(branch.key, None)
            if not ctx.answered:
                self._call_state(ctx, "confirmed")  # once: 2xx retransmissions and forks confirm nothing new
            ctx.answered = True
            ctx.done = True
            self._respond(ctx.server, resp)  # every 2xx goes up (RFC 3261 §16.7 step 5)
            for other in ctx.pending:
                self._cancel_branch(other)
            return
        self._final(branch, resp)

    def on_timeout(self, txn: ClientTransaction) -> None:
        branch = txn.context
        if not isinstance(branch, Branch) or branch.final is not None:
            return
        if branch.backend is not None and self.dispatcher is not None:
            self.dispatcher.call_failed(branch.backend)
        self._final(branch, self.identity.response(branch.ctx.request, 408, "Request Timeout"))

    def _final(self, branch: Branch, resp: Response) -> None:
        ctx = branch.ctx
        branch.final = resp
        self._invites.pop(branch.key, None)
        self._release(branch)
        if ctx.done:
            return
        if (branch.backend is not None and resp.status in FAILOVER_STATUSES and not ctx.cancelled
                and self.dispatcher is not None):
            log.info("failover", backend=branch.backend.uri, status=resp.status, **about(ctx.request))
            try:
                if self._try_backend(ctx):
                    return  # serial failover within the same transaction
            except SipError:
                pass
        if ctx.pending:
            return
        ctx.done = True
        self._call_state(ctx, "terminated")
        if ctx.request.method == "INVITE" and ctx.request.to.tag is None:
            self._call_ended(ctx.request.call_id)  # every branch failed: no call
        self._respond(ctx.server, self._best(ctx))

    def _call_state(self, ctx: ProxyContext, state: str) -> None:
        """A call begins with an initial INVITE and ends with its failure or a BYE."""
        on_call, req = self.on_call, ctx.request
        if on_call is None:
            return
        method = req.method
        if (method == "INVITE" and req.to.tag is None) or (method == "BYE" and state == "terminated"):
            backend = ""
            for branch in reversed(ctx.branches):
                if branch.backend is not None:
                    backend = branch.backend.uri
                    break
            on_call(req, state, backend)

    @staticmethod
    def _best(ctx: ProxyContext) -> Response:
        """RFC 3261 §16.7 step 6: a 6xx, else the lowest class; 503 becomes 500."""
        finals = [b.final for b in ctx.branches if b.final is not None]
        six = [r for r in finals if r.status >= 600]
        best = six[0] if six else min(finals, key=lambda r: (r.status // 100, r.status))
        if best.status == 503:
            best.set_status(500, "Server Internal Error")
        if best.status in (401, 407):  # step 7: every branch's challenges together
            name = "WWW-Authenticate" if best.status == 401 else "Proxy-Authenticate"
            for other in finals:
                if other is not best and other.status == best.status:
                    for value in other.get_lines(name):
                        best.append(name, value)
        return best

    def _release(self, branch: Branch) -> None:
        """A failed INVITE branch to a backend is not a call in flight any more."""
        final = branch.final
        if branch.backend is not None and branch.ctx.request.method == "INVITE" and final and final.status >= 300:
            self._call_ended(branch.ctx.request.call_id)

    def _call_ended(self, call_id: str) -> None:
        backend = self.calls.pop(call_id, (None, 0.0))[0]
        if backend is not None and backend.calls > 0:
            backend.calls -= 1

    def observe_request(self, req: Request) -> None:
        """Bookkeeping for least-busy: a BYE ends the call it belongs to."""
        if req.method == "BYE":
            self._call_ended(req.call_id)

    def forward_stray(self, resp: Response) -> None:
        """A response no transaction claims (a retransmitted 2xx): statelessly, by Via."""
        vias = resp.vias
        if len(vias) < 2 or vias[0].sent_by.lower() not in self._sent_bys:
            return
        resp.remove_first_value("Via")
        address = response_address(resp.top_via)
        if address is not None:
            self.send(resp.to_bytes(), Target(resp.top_via.transport.lower(), address))

    # -- CANCEL --------------------------------------------------------------------
    def cancel(self, server: ServerTransaction) -> bool:
        """Upstream CANCEL for a proxied INVITE: cancel every pending branch."""
        ctx = server.context
        if not isinstance(ctx, ProxyContext):
            return False
        ctx.cancelled = True
        for branch in ctx.pending:
            self._cancel_branch(branch)
        return True

    def _cancel_branch(self, branch: Branch) -> None:
        txn = branch.txn
        if not isinstance(txn, ClientInvite) or branch.final is not None:
            return
        if not branch.provisional:
            branch.cancel_pending = True  # RFC 3261 §9.1: only after a provisional
            return
        branch.cancel_pending = False
        cancel = txn.cancel_request()
        target = Target(branch.hop.transport, (branch.hop.host, branch.hop.port))
        try:
            self.run(self.transactions.send_request(cancel, branch.hop.transport in RELIABLE, self.now(), target))
        except SipError:
            log.warning("CANCEL not sent: transaction table full", **about(cancel, target))

    @staticmethod
    def ended(txn: Transaction) -> None:
        """A transaction ended: once every one of a proxied request's has, its context and
        branches stop referring to each other, so refcounting frees them and all they hold
        (the cyclic GC would otherwise have to find them: about 40 objects per call).
        Counted once per transaction: it lets go of its context here."""
        context, txn.context = txn.context, None
        ctx = context.ctx if type(context) is Branch else context
        if type(ctx) is ProxyContext:
            ctx.live -= 1
            if not ctx.live:
                ctx.branches.clear()

    def _respond(self, server: ServerTransaction, resp: Response) -> None:
        self.run(self.transactions.respond(server, resp, self.now()))
