"""One edgeproxy instance: transports in, the transaction layer, the core.

Everything SIP-shaped is decided by the sans-IO layers; this module only
parses what transports deliver, runs the transaction layer's actions
against the transports and the event loop's clock, and hands requests to
the part that answers them: itself (OPTIONS to us, CANCEL), the registrar,
or the proxy core (everything else).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from prometheus_client import generate_latest

from edgeproxy.aio import start_eagerly, start_in_task
from edgeproxy.config import Config
from edgeproxy.dispatcher.backends import Backend, BackendSet
from edgeproxy.dispatcher.dns import SipResolver
from edgeproxy.dispatcher.probe import Probe, Prober
from edgeproxy.observability.logging import about, debug_about
from edgeproxy.observability.metrics import (
    BINDINGS,
    CALLS,
    MESSAGE_SECONDS,
    STORE_ERRORS,
    SUBSCRIPTIONS,
    TRANSACTIONS,
    count_request,
    count_response,
)
from edgeproxy.proxy.core import Identity, ProxyCore
from edgeproxy.proxy.routing import Hop, hop_for, hop_of_source, our_uri, pop_own_routes
from edgeproxy.proxy.routing import is_ip as routing_is_ip
from edgeproxy.proxy.routing import path as routing_path
from edgeproxy.security.guard import Guard, GuardPolicy
from edgeproxy.sip import (
    Message,
    Request,
    Response,
    SipError,
    error_response,
    make_response,
    parse_message,
    parse_uri,
)
from edgeproxy.sip.destinations import default_port, response_address, stamp_received
from edgeproxy.sip.headers import shared_name_addr
from edgeproxy.sip.ids import branch_worker, new_branch
from edgeproxy.sip.names import METHODS
from edgeproxy.sip.transaction import (
    Action,
    ClientTransaction,
    Deliver,
    Send,
    ServerTransaction,
    State,
    Terminated,
    Timeout,
    Transaction,
)
from edgeproxy.sip.transactions import TransactionLayer
from edgeproxy.sip.uri import URI
from edgeproxy.sip.validate import (
    check_forwardable,
    check_request,
    check_response,
    decrement_max_forwards,
    require_extensions,
)
from edgeproxy.state.dialogs import CallRecorder
from edgeproxy.state.errors import StoreError, store_unavailable
from edgeproxy.state.factory import Stores, open_stores
from edgeproxy.state.users import MemoryUserStore, load_users_file
from edgeproxy.transport.base import RELIABLE, Source, Target
from edgeproxy.transport.keepalive import NatPinger
from edgeproxy.transport.manager import TransportManager
from edgeproxy.transport.pacing import in_turns
from edgeproxy.transport.workers import SECRET_ENV, WorkerLink, WorkerRole
from presence.service import Notify, PresenceService
from registrar.auth import Authenticator
from registrar.bindings import ExpiryPolicy, aor_of
from registrar.service import Registrar, behind_nat
from registrar.throttle import Forward, Throttle

log = structlog.get_logger(__name__)

TICK = 0.02  # seconds: the resolution of transaction timers (T1 is 0.5 s)
ALLOW = ", ".join(METHODS)
SUPPORTED_TAGS = frozenset({"path", "outbound"})
SUPPORTED = ", ".join(sorted(SUPPORTED_TAGS))


def response_target(source: Source, req: Request) -> Target | None:
    """Where a response to `req` goes (RFC 3261 §18.2.2, RFC 3581): back over
    the connection it came on, else to the address its top Via names."""
    via = req.top_via
    if source.transport == "udp":
        address = response_address(via)
        return None if address is None else Target("udp", address)
    host = (via.received or source.remote[0]).strip("[]")
    port = via.port or default_port(via.transport)
    return Target(source.transport, (host, port), source.connection)


@dataclass(slots=True)
class Notifying:
    """A NOTIFY of this subscription is under way."""

    key: str


@dataclass(slots=True)
class Upstream:
    """A client's REGISTER waiting for the upstream registrar's answer."""

    server: ServerTransaction
    forward: Forward


class EdgeProxy:
    def __init__(self, config: Config, worker: WorkerRole | None = None) -> None:
        """`worker`: set when this process is one of `server.workers`."""
        self.config = config
        self.worker = worker
        self.loop = asyncio.get_running_loop()
        self.transactions = TransactionLayer(config.limits.max_transactions, config.limits.max_transactions_per_source,
                                             config.limits.transaction_wait, TICK)
        self.transports = TransportManager(config, self.on_message)
        self.pinger = NatPinger(config.keepalive.mode, config.keepalive.interval, config.keepalive.max_targets,
                                self.transports.send, self._our_udp_address, config.server.user_agent)
        self.draining = False
        self._timer: asyncio.TimerHandle | None = None
        self._identities: set[str] = set()
        self._domains = [d.lower() for d in config.server.domains]
        self._realm = config.realm.lower()
        self._our_ports: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in config.security.trusted]
        self._trust_cache: dict[str, bool] = {}
        # dispatcher backends are trusted like security.trusted, by address and port (like
        # Kamailio's ds_is_from_list): a client on a backend's host is still a client
        self._backend_addrs: set[tuple[str, int]] = set()
        self._backend_hosts: set[str] = set()
        self.stores: Stores = open_stores(config)
        sec = config.security
        self.guard = Guard(GuardPolicy(sec.rate_limit, sec.rate_window, sec.auth_fail_limit, sec.auth_fail_user_limit,
                                       sec.auth_fail_window, sec.ban_time, sec.scanner_action,
                                       sec.scanner_user_agents, sec.max_tracked),
                           self.stores.bans, self._exempt, time.time)
        self._per_source = config.limits.max_transactions_per_source > 0
        TRANSACTIONS.set_function(lambda: len(self.transactions))
        self._start = start_eagerly if config.state.backend == "memory" else start_in_task
        self.auth = self._authenticator()
        self.registrar = self._registrar()
        d = config.dispatcher
        self.backends = BackendSet([Backend(b.uri, b.weight) for b in d.backends], d.algorithm, d.down_after,
                                   d.up_after, d.suspect_after)
        self._note_backend_addresses()
        self.proxy: ProxyCore | None = None  # built at start, once the listen addresses are known
        self.throttle: Throttle | None = None  # likewise
        self.presence: PresenceService | None = None  # likewise
        # BLF from proxied calls costs a little per call: only when someone can watch it
        self.presence_tracks_calls = config.presence.enabled and "dialog" in config.presence.events
        self.calls = (CallRecorder(self.stores.dialogs, config.server.instance_id, on_error=self._call_not_recorded)
                      if config.state.record_calls else None)
        self._expiry_task: asyncio.Task[None] | None = None
        self.prober: Prober | None = None
        self._probe_task: asyncio.Task[None] | None = None

    def _authenticator(self) -> Authenticator | None:
        reg = self.config.registrar
        if not reg.auth:
            return None
        shared = reg.secret or (os.environ.get(SECRET_ENV, "") if self.worker is not None else "")
        if shared:
            secret = shared.encode()
        else:
            secret = secrets.token_bytes(32)
            if self.config.state.backend == "redis":
                log.warning("registrar.secret is not set: nonces from this instance will not verify on others")
        return Authenticator(self.config.realm, self.stores.users, self.stores.nonces, secret, reg.nonce_lifetime,
                             reg.algorithms, guard=self.guard)

    def _registrar(self) -> Registrar | None:
        reg = self.config.registrar
        if not reg.enabled:
            return None
        policy = ExpiryPolicy(reg.min_expires, reg.max_expires, reg.default_expires)
        return Registrar(self.stores.location, self.auth, policy, reg.max_contacts, self.config.server.instance_id,
                         self.local_domain, self.domain_of)

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        # the shared tables each wait up to 5 s for Redis: together, not one after the other
        await asyncio.gather(self.stores.bans.start(), self.stores.subscriptions.start())
        await self.transports.start()
        if self.worker is not None:
            link = WorkerLink(self.worker, self.process, self.transports.write_held, self.transports.table.reachable)
            self.transports.join(link)
            link.open()
        self._identities = self._own_identities()
        self._our_ports = {port for _, (_, port) in self.transports.bound}
        self.pinger.start()
        addresses: dict[str, tuple[str, int]] = {}
        for spec, (host, port) in self.transports.bound:
            if ipaddress.ip_address(host).is_unspecified:
                host = self.config.advertise.strip("[]")
            addresses.setdefault(spec.transport, (host, port))
        identity = Identity(self.config.advertise.strip("[]"), addresses, self._uri_is_ours, self.local_domain,
                            self.domain_of, self.config.server.user_agent)
        self.resolver = SipResolver(self.config.server.nameservers)
        self.proxy = ProxyCore(self.transactions, self._run, self.transports.send, self.loop.time, identity,
                               self.trusted, self.stores.location,
                               self.stores.users if self.config.registrar.users else None,
                               self.backends if self.backends else None, self.resolver,
                               self.config.dispatcher.branch_timeout, self.config.limits.invite_timeout,
                               self._call_event if self.presence_tracks_calls or self.calls else None,
                               lambda hop: self.transports.connected(hop.transport, (hop.host, hop.port)))
        proxy = self.proxy
        CALLS.set_function(lambda: len(proxy.calls))
        if self.config.throttle.mode != "off":
            self.throttle = self._throttle(identity)
        if self.config.presence.enabled:
            self.presence = self._presence_service(identity)
            self._expiry_task = self.loop.create_task(self._expiring())
        self._start_probing()

    def _start_probing(self) -> None:
        if self.backends and self.prober is None and self.proxy is not None:
            host, port = self.proxy.identity.via_host("udp")
            self.prober = Prober(self.backends, host, port, self.proxy.identity.advertise,
                                 self.proxy.identity.user_agent)
            self.backends.on_suspect = self._probe_now
            self._probe_task = self.loop.create_task(self._probing())

    def reload(self, config: Config) -> None:
        """SIGHUP: the dispatcher's backends and the users file change without a restart
        (calls in progress keep their routes; other settings need one)."""
        d = config.dispatcher
        self.backends.replace([Backend(b.uri, b.weight) for b in d.backends], d.algorithm)
        self._note_backend_addresses()
        if self.proxy is not None:
            self.proxy.dispatcher = self.backends if self.backends else None
        self._start_probing()
        users_file = config.registrar.users
        if users_file not in ("", "redis") and isinstance(self.stores.users, MemoryUserStore):
            self.stores.users.users = load_users_file(users_file, config.realm)
        log.info("reloaded", backends=[b.uri for b in self.backends.backends],
                 users=len(self.stores.users.users) if isinstance(self.stores.users, MemoryUserStore) else None)

    def _throttle(self, identity: Identity) -> Throttle:
        cfg = self.config.throttle
        hop = hop_for(parse_uri(cfg.upstream))
        port = identity.record_route_port(hop.transport)

        def path(source: Source) -> str:
            return routing_path(identity.advertise, port, hop.transport,
                                Hop(source.transport, source.remote[0], source.remote[1]))

        def edge_contact(user: str) -> str:
            return our_uri(identity.advertise, port, hop.transport, user)

        reg = self.config.registrar
        policy = ExpiryPolicy(min(reg.min_expires, cfg.client_expires), cfg.client_expires, cfg.client_expires)
        return Throttle(cfg.mode, policy, cfg.upstream_expires, self.stores.location, self.stores.upstream,
                        self.config.server.instance_id, self.domain_of, path, edge_contact, reg.max_contacts)

    def _presence_service(self, identity: Identity) -> PresenceService:
        cfg = self.config.presence
        host, port = identity.advertise, identity.record_route_port("udp")
        contact = our_uri(host, port, "udp")
        return PresenceService(self.stores.publications, self.stores.subscriptions,
                               ExpiryPolicy(cfg.min_expires, cfg.max_expires, cfg.default_expires),
                               frozenset(cfg.events), self.domain_of, lambda: contact, self.local_domain,
                               notify_interval=cfg.notify_interval, dialogs=self.stores.dialogs)

    @staticmethod
    def _call_not_recorded(err: Exception) -> None:
        STORE_ERRORS.inc()
        log.warning("call not recorded", error=str(err))

    def _call_event(self, req: Request, state: str, backend: str) -> None:
        if self.calls is not None:
            self.calls.update(req.call_id, state, req.from_.uri_text, req.to.uri_text, backend)
        if self.presence_tracks_calls and self.presence is not None:
            changed = self.presence.call_event(req, state)
            if changed is None or changed:
                self._background(self._light_lamps(req, changed))

    async def _light_lamps(self, req: Request, changed: list[str] | None) -> None:
        """BLF: NOTIFYs to the watchers of a call's parties (see PresenceService.call_event)."""
        assert self.presence is not None
        if changed is None:
            changed = await self.presence.ended_elsewhere(req)
        await self._send_notifies(await self.presence.notify_lamps(req.call_id, changed))

    async def _expiring(self) -> None:
        """Once a second: the final NOTIFY of every subscription that ran out."""
        assert self.presence is not None
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._send_notifies(await self.presence.expire())
            except Exception:
                log.exception("subscription expiry failed")

    async def _probing(self) -> None:
        assert self.prober is not None
        while True:
            await self._resolve_backends()
            for probe, req in self.prober.round():
                self._send_probe(probe, req)
            await asyncio.sleep(self.config.dispatcher.probe_interval)

    def _probe_now(self, backend: Backend) -> None:
        assert self.prober is not None
        pending = self.prober.probe_now(backend)
        if pending is not None:
            self._send_probe(*pending)

    def _send_probe(self, probe: Probe, req: Request) -> None:
        hop = probe.backend.hop
        target = Target(hop.transport, (hop.host, hop.port))
        try:
            txn, actions = self.transactions.start_client(req, hop.transport in ("tcp", "tls"), self.loop.time(),
                                                          target)
        except SipError:
            return  # the table is full: the next round tries again
        txn.context = probe
        self._run(actions)

    async def _resolve_backends(self) -> None:
        """Backends named by host name: locate them (RFC 3263, cached for the records' TTL)."""
        for backend in self.backends.backends:
            uri = parse_uri(backend.uri)
            if routing_is_ip(uri.host.strip("[]")):
                continue
            hops = await self.resolver.resolve(uri)
            if hops:
                backend.hop = hops[0]
            else:
                log.warning("backend does not resolve", backend=backend.uri)
        self._note_backend_addresses()

    def _note_backend_addresses(self) -> None:
        hops = [backend.hop for backend in self.backends.backends]
        if self.config.throttle.upstream:
            hops.append(hop_for(parse_uri(self.config.throttle.upstream)))  # the upstream registrar calls users
        self._backend_addrs = {(hop.host.strip("[]"), hop.port) for hop in hops}
        self._backend_hosts = {host for host, _ in self._backend_addrs}

    async def active_calls(self) -> list[dict[str, object]]:
        """/calls: what the dialog store holds (every instance's calls), newest first."""
        return [asdict(d) for d in await self.stores.dialogs.active()]

    async def metrics(self) -> bytes:
        """/metrics, with the store's bindings and subscriptions counted at scrape time (a
        store that does not answer within a second leaves the gauges as they were)."""
        try:
            async with asyncio.timeout(1.0):
                BINDINGS.set(await self.stores.location.count())
                SUBSCRIPTIONS.set(await self.stores.subscriptions.count())
        except (StoreError, TimeoutError):
            pass
        return generate_latest()

    async def readiness(self) -> tuple[bool, str]:
        """/ready: listening and not draining, the state store answering, and a
        backend usable when backends are configured."""
        if self.draining or not self.transports.bound:
            return False, "draining" if self.draining else "not listening"
        if not await self.stores.reachable():
            return False, "state store unreachable"
        if self.backends and not self.backends.candidates():
            return False, "no usable backend"
        return True, "ready"

    async def drain(self) -> None:
        """SIGTERM: refuse new dialogs (503) but go on listening, so that the open transactions
        finish and the calls set up through this instance get their BYE here; then close."""
        self.draining = True
        deadline = self.loop.time() + self.config.server.drain_timeout
        while (self._unfinished() or (self.proxy is not None and self.proxy.calls)) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.transports.stop_listening()
        await self.close()

    async def close(self) -> None:
        self.pinger.stop()
        for task in (self._probe_task, self._expiry_task):
            if task is not None:
                task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.transports.close()
        if self.calls is not None:
            await self.calls.flush()
        await self.stores.close()

    def _unfinished(self) -> int:
        busy = (State.TRYING, State.PROCEEDING, State.CALLING)
        return len(self._tasks) + sum(1 for t in self.transactions.server.values() if t.state in busy) + sum(
            1 for t in self.transactions.client.values() if t.state in busy)

    def _own_identities(self) -> set[str]:
        names = {self.config.advertise.lower().strip("[]"), "localhost"}
        names.update(d.lower() for d in self.config.server.domains)
        for spec, (host, _) in self.transports.bound:
            names.add(host)
            if ipaddress.ip_address(host).is_unspecified:
                names.update({"127.0.0.1", "::1"})
        return names

    def _our_udp_address(self) -> tuple[str, int]:
        for spec, address in self.transports.bound:
            if spec.transport == "udp":
                return address
        return self.transports.bound[0][1]

    # -- incoming ----------------------------------------------------------------
    def on_message(self, data: bytes, source: Source) -> None:
        """Entry point for every message a transport delivers; never raises."""
        if not self.guard.admit(source.remote[0]):
            return
        link = self.transports.link
        if link is not None and data.startswith(b"SIP/"):
            owner = branch_worker(data)
            if owner is not None and owner != link.index and owner < link.count:
                link.hand_over(owner, data, source)  # a response to a sibling's request
                return
        self.process(data, source)

    def process(self, data: bytes, source: Source) -> None:
        """Handle a message here (also a response a sibling worker handed over)."""
        start = time.perf_counter()
        try:
            msg = parse_message(data, self.transports.limits, stream=source.transport in ("tcp", "tls"))
            try:
                self._handle(msg, source)
            except SipError as err:
                if err.message is None:
                    err.message = msg  # whatever failed, the request itself is answerable
                raise
        except SipError as err:
            self._refuse(err, source)
        except Exception:  # a bug must cost one message, never the process
            log.exception("unhandled error", **about(None, source))
        MESSAGE_SECONDS.observe(time.perf_counter() - start)

    def _handle(self, msg: Request | Response, source: Source) -> None:
        now = self.loop.time()
        if isinstance(msg, Response):
            check_response(msg)  # a SipError raised in here gets msg attached by `process`
            count_response(msg.status)
            self._run(self.transactions.receive_response(msg, now))
            return
        if self.guard.scanners is not None and self._scanner(msg):
            return
        stamp_received(msg, source.remote[0], source.remote[1])
        check_request(msg)
        count_request(msg.method)
        if source.connection is not None and "alias" in msg.top_via.params:
            # RFC 5923: requests toward the sent-by may reuse this connection
            via = msg.top_via
            self.transports.table.alias(source.connection, (via.host.strip("[]"), via.port or default_port(via.transport)))
        # draining: nothing new outside a dialog, but what is under way goes on
        new_allowed = not self.draining or msg.to.tag is not None or msg.method == "CANCEL"
        actions = self.transactions.receive_request(msg, source.reliable, now, source,
                                                    source.remote[0] if self._per_source else "", new_allowed)
        if msg.method == "ACK" and actions and isinstance(actions[0], Deliver) and actions[0].txn is None:
            if self.proxy is not None:
                self.proxy.forward_stateless(msg, source)  # the ACK for a 2xx: end to end
            return
        self._run(actions)

    def _scanner(self, req: Request) -> bool:
        """True when a scanner's request is to be dropped; raises the 403 when it is to be refused."""
        action = self.guard.scanner(req.get("User-Agent"))
        if action == "403":
            raise SipError(403, "Forbidden")
        return action == "drop"

    def _refuse(self, err: SipError, source: Source) -> None:
        req = err.message
        if not isinstance(req, Request):
            debug_about(log, "dropped unparseable message", err.message, source, reason=err.reason)
            return
        resp = error_response(err)
        if resp is None:
            return
        if self.config.server.user_agent:
            resp.append("Server", self.config.server.user_agent)
        debug_about(log, "request refused", req, source, reply=err.status, reason=err.reason)
        try:
            stamp_received(req, source.remote[0], source.remote[1])
            target = response_target(source, req)
        except SipError:  # no usable Via: answer where it came from
            target = Target(source.transport, source.remote, source.connection)
        if target is not None:
            self.transports.send(resp.to_bytes(), target)

    # -- the transaction user ------------------------------------------------------
    def _handle_request(self, txn: ServerTransaction | None, req: Request) -> None:
        if txn is None:
            return  # an ACK that matched no transaction (handled in _handle)
        if req.to.tag is None and req.has("Route"):
            # a preloaded Route to us (a phone's outbound proxy setting) only brought the
            # request here: without it, REGISTER, PUBLISH, SUBSCRIBE are ours to answer
            pop_own_routes(req, self._uri_is_ours)
        if req.method == "CANCEL":
            self._cancel(txn, req)
        elif req.method == "REGISTER" and (self.registrar or self.throttle) and not req.has("Route"):
            if not self.local_domain(req.uri.host):
                self.respond(txn, make_response(req, 403, "Forbidden (not our domain)"))
            else:
                self._spawn(txn, self._throttled(txn, req) if self.throttle else self._register(txn, req))
        elif req.method == "OPTIONS" and not req.has("Route") and self._uri_is_ours(req.uri):
            self._spawn(txn, self._options(txn, req))
        elif self.presence is not None and self.presence.serves(req) and self._for_presence(req):
            self._spawn(txn, self._presence(txn, req))
        elif (req.method == "NOTIFY" and self.presence is not None and self.trusted(txn.peer)
              and req.event == "message-summary"):
            self._spawn(txn, self._voicemail(txn, req))
        elif (self.auth and req.to.tag is None and not self.trusted(txn.peer)
              and (req.method in self.config.registrar.challenge_methods or self._reaches_users(req))):
            self._spawn(txn, self._authenticated(txn, req))
        else:
            self._proxy(txn, req)

    def _reaches_users(self, req: Request) -> bool:
        """Whether the proxy would take this request to our users' contacts (with no
        backend to send outside requests to): with authentication on, only trusted
        sources or authenticated users may do that (never an open relay)."""
        return (not self.backends and req.method != "ACK" and req.uri.user is not None
                and not req.has("Route") and self.local_domain(req.uri.host))

    def _for_presence(self, req: Request) -> bool:
        """Addressed to a user of ours (PUBLISH, a new SUBSCRIBE), or to us (a SUBSCRIBE in one of our dialogs)."""
        if req.has("Route"):
            return False
        if req.to.tag is None:
            return req.uri.user is not None and self.local_domain(req.uri.host)
        return req.method == "SUBSCRIBE" and req.uri.user is None and self._uri_is_ours(req.uri)

    async def _presence(self, txn: ServerTransaction, req: Request) -> None:
        """PUBLISH and SUBSCRIBE: outsiders authenticate first (407); only a user publishes their own state."""
        assert self.presence is not None
        source: Source = txn.peer
        if self.auth is not None and not self.trusted(source) and req.to.tag is None:
            try:
                user = await self.auth.authenticate(req, proxy=True, source_ip=source.remote[0])
                if req.method == "PUBLISH" and user != aor_of(req.uri, self.domain_of).rpartition("@")[0]:
                    raise SipError(403, "Forbidden (not your presentity)")
            except SipError as err:
                self.respond(txn, make_response(req, err.status, err.reason, err.headers))
                return
        if req.method == "PUBLISH":
            outcome = await self.presence.publish(req)
        else:
            outcome = await self.presence.subscribe(req, source, behind_nat(req, source))
        self.respond(txn, outcome.response)
        await self._send_notifies(outcome.notifies)

    async def _voicemail(self, txn: ServerTransaction, req: Request) -> None:
        """Asterisk's MWI NOTIFY: the edge's MWI watchers hear of it, and it goes on to the user."""
        assert self.presence is not None
        await self._send_notifies(await self.presence.voicemail_notify(req))
        self._proxy(txn, req)

    async def _send_notifies(self, notifies: list[Notify]) -> None:
        """In turns of the event loop (see transport.pacing): a fan-out to thousands of watchers."""
        async for sub, req in in_turns(notifies):
            if sub.route_set:
                hop = hop_for(shared_name_addr(sub.route_set[0]).uri)
            elif sub.behind_nat and sub.source:
                hop = hop_of_source(sub.source)
            else:
                hops = await self.resolver.resolve(parse_uri(sub.remote_target))
                if not hops:
                    log.info("NOTIFY not sent: watcher does not resolve", target=sub.remote_target)
                    continue
                hop = hops[0]
            self._start_request(req, hop, Notifying(sub.key))

    def _start_request(self, req: Request, hop: Hop, context: object) -> bool:
        """Send a request of our own (NOTIFY, a REGISTER upstream) in a client transaction."""
        assert self.proxy is not None
        target = Target(hop.transport, (hop.host, hop.port))
        req.insert("Via", self.proxy.identity.via(hop.transport, new_branch()))
        try:
            txn, actions = self.transactions.start_client(req, hop.transport in RELIABLE, self.loop.time(), target)
        except SipError:
            log.warning("request not sent: transaction table full", **about(req, target))
            return False
        txn.context = context
        self._run(actions)
        return True

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Work no request waits for (like _spawn, at once with the memory backend)."""
        self._start(work, self._tasks, lambda err: log.error("background work failed", error=repr(err)))

    async def _options(self, txn: ServerTransaction, req: Request) -> None:
        """OPTIONS to us (a SIP ping, whatever the user part), unless it names a
        registered user and comes from a source that may reach users: then it is
        theirs to answer. Anyone else gets our answer, so nobody can probe which
        users exist or are online."""
        if (req.uri.user is not None and (self.trusted(txn.peer) or not self.auth)
                and await self.stores.location.lookup(aor_of(req.uri, self.domain_of))):
            self._proxy(txn, req)
            return
        try:
            require_extensions(req, "Require", SUPPORTED_TAGS)  # as the UAS, Require is ours to honour
        except SipError as err:
            self.respond(txn, make_response(req, err.status, err.reason, err.headers))
            return
        self.respond(txn, make_response(req, 200, headers=[
            ("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", SUPPORTED)]))

    def _proxy(self, txn: ServerTransaction, req: Request) -> None:
        assert self.proxy is not None
        self.proxy.observe_request(req)
        self._spawn(txn, self.proxy.route(txn, req))

    async def _register(self, txn: ServerTransaction, req: Request) -> None:
        assert self.registrar is not None
        resp = await self.registrar.register(req, txn.peer)
        self.respond(txn, resp)
        source: Source = txn.peer
        if resp.status == 200 and source.transport == "udp" and resp.has("Contact"):
            longest = max((int(na.params.get("expires") or 0) for na in resp.contacts), default=0)
            if longest:
                self.pinger.watch(source.remote, time.time() + longest)
            else:
                self.pinger.unwatch(source.remote)

    async def _throttled(self, txn: ServerTransaction, req: Request) -> None:
        """REGISTER through the mid-registrar: answered here, or sent upstream first."""
        assert self.throttle is not None
        source: Source = txn.peer
        try:
            check_forwardable(req)
            if self.config.throttle.authenticate and self.auth is not None:
                await self.auth.authenticate(req, source_ip=source.remote[0])
            plan = await self.throttle.plan(req, source)
        except SipError as err:
            self.respond(txn, make_response(req, err.status, err.reason, err.headers))
            return
        if isinstance(plan, Response):
            self.respond(txn, plan)
            return
        fwd = plan.request
        if self.config.throttle.authenticate:
            fwd.remove("Authorization")  # ours, checked here: the upstream trusts the edge
        decrement_max_forwards(fwd)
        hops = await self.resolver.resolve(parse_uri(self.config.throttle.upstream))
        if not hops:
            self.respond(txn, make_response(req, 503, "Service Unavailable (upstream registrar)",
                                            [("Retry-After", "5")]))
            return
        if not self._start_request(fwd, hops[0], Upstream(txn, plan)):
            self.respond(txn, make_response(req, 503, "Service Unavailable", [("Retry-After", "5")]))

    async def _upstream_answered(self, pending: Upstream, resp: Response) -> None:
        assert self.throttle is not None
        self.respond(pending.server, await self.throttle.answered(pending.forward, resp))

    async def _authenticated(self, txn: ServerTransaction, req: Request) -> None:
        """RFC 3261 §22.3: a proxy challenges with 407 before acting for a client."""
        assert self.auth is not None
        try:
            check_forwardable(req)
            await self.auth.authenticate(req, proxy=True, source_ip=txn.peer.remote[0])
        except SipError as err:
            self.respond(txn, make_response(req, err.status, err.reason, err.headers))
            return
        self._proxy(txn, req)

    def _spawn(self, txn: ServerTransaction, work: Coroutine[Any, Any, None]) -> None:
        """Run a handler (at once, see edgeproxy.aio); whatever happens, the transaction gets an answer."""

        def failed(err: BaseException) -> None:
            if txn.state in (State.TRYING, State.PROCEEDING):
                self.respond(txn, store_unavailable(txn.request) if isinstance(err, StoreError)
                             else make_response(txn.request, 500))
            if isinstance(err, StoreError):  # an outage: counted and visible on /ready, not a bug
                STORE_ERRORS.inc()
                log.warning("state store unavailable", error=str(err), **about(txn.request, txn.peer))
                return
            log.error("request handling failed", error=repr(err), **about(txn.request, txn.peer))

        self._start(work, self._tasks, failed)

    def trusted(self, peer: object) -> bool:
        """A backend or a `security.trusted` address: may reach users and foreign domains."""
        if not isinstance(peer, Source):
            return False
        remote = peer.remote
        return (remote[0], remote[1]) in self._backend_addrs or bool(self._trusted) and self._is_trusted(remote[0])

    def _exempt(self, ip: str) -> bool:
        """Never rate-limited or banned: trusted networks and the backends' hosts."""
        return ip in self._backend_hosts or bool(self._trusted) and self._is_trusted(ip)

    def _is_trusted(self, address: str) -> bool:
        known = self._trust_cache.get(address)
        if known is None:
            ip = ipaddress.ip_address(address)
            known = any(ip in net for net in self._trusted)
            if len(self._trust_cache) >= 65536:
                self._trust_cache.clear()
            self._trust_cache[address] = known
        return known

    def domain_of(self, host: str) -> str:
        """The domain an AoR lives in: one of ours as written; for our own
        addresses, the default domain. With no `server.domains`, every AoR is in
        the realm (single-domain mode, Kamailio's use_domain=0)."""
        host = host.lower().strip("[]")
        domains = self._domains
        if not domains:
            return self._realm
        if host in domains or host not in self._identities:
            return host
        return domains[0]

    def local_domain(self, host: str) -> bool:
        """A domain we are authoritative for (registrar, calls to users). With no
        `server.domains` configured, any: a standalone registrar serves whatever
        domain its phones use, and untrusted requests still only ever reach
        registered contacts or backends (never a foreign host)."""
        return not self.config.server.domains or self._ours(host)

    def _ours(self, host: str) -> bool:
        """One of our addresses or configured domains."""
        return host.lower().strip("[]") in self._identities

    def _uri_is_ours(self, uri: URI) -> bool:
        """One of our names (domains, advertise), or one of our IP addresses on a port we
        listen on; an IP without port means the transport's default port (RFC 3263), so
        `sip:127.0.0.1` is not us when we are on 5070 and an Asterisk is on 5060."""
        if not uri.is_sip or not self._ours(uri.host):
            return False
        if not routing_is_ip(uri.host.strip("[]")):
            return True
        return (uri.port or default_port(uri.implied_transport)) in self._our_ports

    def _cancel(self, txn: ServerTransaction, cancel: Request) -> None:
        invite = self.transactions.cancel_target(cancel)
        if invite is None:
            self.respond(txn, make_response(cancel, 481))
            return
        self.respond(txn, make_response(cancel, 200))
        if self.proxy is not None and self.proxy.cancel(invite):
            return  # proxied: the branches' 487 will answer the INVITE
        if invite.state is State.PROCEEDING:
            self.respond(invite, make_response(invite.request, 487))

    def respond(self, txn: ServerTransaction, resp: Response) -> None:
        """Send a response made here (see also Identity.response for the proxy's)."""
        if self.config.server.user_agent:
            resp.append("Server", self.config.server.user_agent)
        self._run(self.transactions.respond(txn, resp, self.loop.time()))

    # -- actions and timers ----------------------------------------------------------
    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):  # in order of how often they come (a timeout is rare)
                self._send(action.txn, action.message)
            elif isinstance(action, Deliver):
                self._deliver(action)
            elif isinstance(action, Terminated):
                if self.proxy is not None:
                    self.proxy.ended(action.txn)
                action.txn.context = None  # breaks txn ↔ branch ↔ proxy context cycles: no GC needed
            elif isinstance(action, Timeout):
                self._timed_out(action.txn)
        self._schedule()

    def _deliver(self, action: Deliver) -> None:
        msg, txn = action.message, action.txn
        if isinstance(msg, Request):
            self._handle_request(txn if isinstance(txn, ServerTransaction) else None, msg)
        elif isinstance(msg, Response):
            if isinstance(txn, ClientTransaction):
                if isinstance(txn.context, Probe):
                    assert self.prober is not None
                    self.prober.answered(txn.context, msg)
                elif isinstance(txn.context, Upstream):
                    if msg.status >= 200:
                        self._spawn(txn.context.server, self._upstream_answered(txn.context, msg))
                elif isinstance(txn.context, Notifying):
                    if msg.status in (408, 481) and self.presence is not None:
                        self._background(self.presence.gone(txn.context.key))
                elif self.proxy is not None:
                    self.proxy.on_response(txn, msg)
            elif self.proxy is not None:
                self.proxy.forward_stray(msg)

    def _timed_out(self, txn: Transaction) -> None:
        if isinstance(txn, ClientTransaction):
            if isinstance(txn.context, Probe):
                assert self.prober is not None
                self.prober.timed_out(txn.context)
            elif isinstance(txn.context, Notifying):
                if self.presence is not None:
                    self._background(self.presence.gone(txn.context.key))
            elif isinstance(txn.context, Upstream):
                server = txn.context.server
                if server.state in (State.TRYING, State.PROCEEDING):
                    self.respond(server, make_response(server.request, 408, "Request Timeout (upstream registrar)"))
            elif self.proxy is not None:
                self.proxy.on_timeout(txn)
        else:
            log.info("transaction timed out", **about(txn.request, txn.peer))

    def _send(self, txn: Transaction, message: Message) -> None:
        target = txn.reply_to
        if target is None:  # worked out once per transaction (its Via and source do not change)
            peer = txn.peer
            target = response_target(peer, txn.request) if isinstance(peer, Source) else peer
            if target is None:
                log.info("response not sent: no valid destination", via=str(txn.request.top_via),
                         **about(txn.request, txn.peer))
                return
            txn.reply_to = target
        self.transports.send(message.to_bytes(), target, self._send_failed, txn)

    def _send_failed(self, err: Exception, txn: Transaction) -> None:
        self._run(self.transactions.transport_error(txn))

    def _schedule(self) -> None:
        """One coarse tick drives every timer while any transaction is open: no
        per-transaction loop timers, no rescheduling each time a deadline moves."""
        if self._timer is None and (len(self.transactions) or self.transports.shedder.active):
            self._timer = self.loop.call_later(TICK, self._on_tick)

    def _on_tick(self) -> None:
        self._timer = None
        now = self.loop.time()
        try:
            self.transports.shed_load()
            if self.proxy is not None:
                self.proxy.expire(now)
            actions = self.transactions.expire(now)
            if actions:
                self._run(actions)
        except Exception:
            log.exception("timer handling failed")
        self._schedule()
