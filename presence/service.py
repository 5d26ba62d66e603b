"""The presence server: PUBLISH in, SUBSCRIBE dialogs, NOTIFYs out.

Sans-IO like the registrar: every call returns the response to send and the
NOTIFYs to send (each with the subscription it belongs to); the instance
sends them in client transactions and reports back the ones that failed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from edgeproxy.sip import Request, Response, SipError, make_response, parse_uri
from edgeproxy.sip.headers import NameAddr
from edgeproxy.sip.ids import new_tag
from edgeproxy.sip.memo import parsed_once
from edgeproxy.state.dialogs import DialogStore
from edgeproxy.transport.base import Source
from registrar.bindings import ExpiryPolicy, aor_of

from .bodies import DialogState, dialog_info
from .packages import PACKAGES, EventPackage, checked_body, package_for
from .publications import Publication, PublicationStore, apply_publish, new_etag
from .subscriptions import Subscription, SubscriptionStore, resource_key

Notify = tuple[Subscription, Request]
Party = tuple[str, str, str, str, str]  # see PresenceService._parties_of
BACKEND_ETAG = "backend-mwi"  # the one publication a backend's message-summary NOTIFYs keep up to date
MAX_CALL_ENTITIES = 100_000  # calls in progress, and entities with one, tracked for BLF, at most
_NO_CALLS: dict[str, LiveCall] = {}  # read-only: an entity with no call in progress
_VERSION = re.compile(rb'(<dialog-info\b[^>]*?\bversion=")[0-9]*(")')


@dataclass(slots=True)
class LiveCall:
    """A call in progress, shared by its parties' entries: a state change is one write,
    whoever watches; each watcher's view is made only when a document is."""

    id: str  # its Call-ID
    parties: tuple[Party, ...]
    state: str = ""  # early | confirmed | terminated, once the proxy said

    def seen_by(self, entity: str) -> DialogState:
        # a call to oneself has that entity twice: it shows as the recipient, the second
        _, _, direction, local, remote = next(p for p in reversed(self.parties) if p[0] == entity)
        return DialogState(self.id, self.state, direction, local, remote)


@dataclass(slots=True)
class Outcome:
    response: Response
    notifies: list[Notify] = field(default_factory=list)


class PresenceService:
    def __init__(self, publications: PublicationStore, subscriptions: SubscriptionStore, policy: ExpiryPolicy,
                 events: frozenset[str], domain_of: Callable[[str], str], contact: Callable[[], str],
                 is_local: Callable[[str], bool] = lambda _: True, clock: Callable[[], float] = time.time,
                 notify_interval: float = 0.0, dialogs: DialogStore | None = None) -> None:
        self.publications = publications
        self.dialogs = dialogs  # calls any instance set up: the parties of a BYE for a call begun elsewhere
        self.subscriptions = subscriptions
        self.policy = policy
        self.events = events
        self.domain_of = domain_of
        self.contact = contact  # our Contact URI for the dialogs (any instance answers it)
        self.clock = clock
        self.is_local = is_local
        # BLF from the calls the proxy routes (pua_dialoginfo): entity → Call-ID → call
        self.calls: dict[str, dict[str, LiveCall]] = {}
        self._live: dict[str, LiveCall] = {}  # Call-ID → call in progress
        self._parties_by_uris = parsed_once(self._parties_for)  # see _parties_of
        self.notify_interval = notify_interval
        self._sent: dict[str, float] = {}  # subscription key → when its last NOTIFY went (rate limit)
        self._held: dict[str, float] = {}  # subscription key → when its held-back NOTIFY is due

    def serves(self, req: Request) -> bool:
        """A PUBLISH, or a SUBSCRIBE for a package we serve (others go to the user)."""
        method = req.method
        return method == "PUBLISH" or (method == "SUBSCRIBE" and req.event in self.events)

    # -- PUBLISH -------------------------------------------------------------------------
    async def publish(self, req: Request) -> Outcome:
        try:
            package = package_for(req.event, self.events)
            expires = self.policy.grant(req.expires)
            body = checked_body(package, req.get("Content-Type"), req.body) if req.body else b""
            resource = aor_of(req.uri, self.domain_of)
            if_match = req.get("SIP-If-Match")
            etag = new_etag()
            left: dict[str, object] = {}

            def change(current: list[Publication]) -> list[Publication]:
                new, made = apply_publish(current, if_match, body, expires, self.clock(), etag)
                left["made"] = made
                return new

            await self.publications.update(resource_key(resource, package.name), change)
        except SipError as err:
            return Outcome(make_response(req, err.status, err.reason, err.headers))
        made = left.get("made")
        headers = [("Expires", str(expires if made else 0))]
        if made is not None:
            headers.append(("SIP-ETag", etag))
        return Outcome(make_response(req, 200, headers=headers), await self._notify_watchers(resource, package))

    async def voicemail_notify(self, req: Request) -> list[Notify]:
        """A message-summary NOTIFY from a backend (Asterisk's MWI, solicited or not) for
        one of our users: its body becomes the mailbox's state, as if PUBLISHed, so
        every MWI watcher here hears of it. The NOTIFY itself still goes its way."""
        package = PACKAGES["message-summary"]
        if package.name not in self.events or not req.body:
            return []
        try:
            body = checked_body(package, req.get("Content-Type"), req.body)
            resource = aor_of(req.to.uri, self.domain_of)
        except SipError:
            return []
        now = self.clock()
        await self.publications.update(resource_key(resource, package.name), lambda current: [
            *(p for p in current if p.etag != BACKEND_ETAG), Publication(BACKEND_ETAG, body, now + 86400, now)])
        return await self._notify_watchers(resource, package)

    # -- SUBSCRIBE -----------------------------------------------------------------------
    async def subscribe(self, req: Request, source: Source, behind_nat: bool) -> Outcome:
        try:
            if req.to.tag is not None:
                return await self._refresh(req)
            return await self._new(req, source, behind_nat)
        except SipError as err:
            return Outcome(make_response(req, err.status, err.reason, err.headers))

    async def _new(self, req: Request, source: Source, behind_nat: bool) -> Outcome:
        package = package_for(req.event, self.events)
        accept = [v.split(";", 1)[0].strip().lower() for v in req.values("Accept")]
        if accept and package.content_type not in accept and "*/*" not in accept:
            raise SipError(406, "Not Acceptable", [("Accept", package.content_type)])
        expires = self.policy.grant(req.expires)
        contacts = req.contacts
        if len(contacts) != 1:
            raise SipError(400, "Bad Request (SUBSCRIBE needs one Contact)")
        sub = Subscription(
            call_id=req.call_id, local_tag=new_tag(), remote_tag=req.from_.tag or "", event=package.name,
            resource=aor_of(req.uri, self.domain_of), resource_uri=req.to.uri_text, watcher_uri=req.from_.uri_text,
            remote_target=contacts[0].uri_text, route_set=tuple(req.values("Record-Route")),
            source=f"{source.transport}:{source.remote[0]}:{source.remote[1]}", behind_nat=behind_nat,
            expires_at=self.clock() + expires, remote_cseq=req.cseq.number)
        ok = self._ok(req, expires, sub.local_tag)
        if expires == 0:  # a fetch: the state once, no subscription (RFC 6665 §4.4.3)
            return Outcome(ok, [await self._notify(sub.next_notify(), package, "terminated;reason=timeout")])
        try:
            await self.subscriptions.put(sub)
        except OverflowError:
            raise SipError(503, "Service Unavailable (too many subscriptions)", [("Retry-After", "60")]) from None
        return Outcome(ok, [await self._notify(sub, package)])

    async def _refresh(self, req: Request) -> Outcome:
        sub = await self.subscriptions.get(f"{req.call_id};{req.to.tag}")
        if sub is None or sub.expires_at <= self.clock():
            raise SipError(481, "Subscription Does Not Exist")
        if req.cseq.number <= sub.remote_cseq:
            raise SipError(500, "Server Internal Error (CSeq out of order)", [("Retry-After", "1")])
        package = package_for(req.event, self.events)
        if package.name != sub.event:
            raise SipError(489, "Bad Event", [("Allow-Events", sub.event)])
        expires = self.policy.grant(req.expires)
        sub = replace(sub, expires_at=self.clock() + expires, remote_cseq=req.cseq.number)
        ok = self._ok(req, expires, sub.local_tag)
        if expires == 0:
            await self.subscriptions.remove(sub.key)
            return Outcome(ok, [await self._notify(sub, package, "terminated;reason=timeout")])
        await self.subscriptions.put(sub)
        return Outcome(ok, [await self._notify(sub, package)])

    # -- dialog-info from proxied calls ------------------------------------------------------
    def call_event(self, req: Request, state: str) -> list[str] | None:
        """A call the proxy routes changed state: its parties' lamps change at once (no
        await on the per-call path). Returns the entities whose watchers must hear of it
        (for `notify_lamps`), or None for the BYE of a call begun on another instance,
        whose parties the store knows (`ended_elsewhere`)."""
        if "dialog" not in self.events:
            return []
        call = self._live.get(req.call_id)
        if call is None:
            if req.method == "BYE":
                return None
            call = self._begin(req.call_id, self._parties_of(req.from_, req.to))
        return self._lamps(call, state)

    async def ended_elsewhere(self, req: Request) -> list[str]:
        """The BYE of a call this instance did not see begin: its parties from the dialog store."""
        stored = await self.dialogs.get(req.call_id) if self.dialogs is not None else None
        if stored is None:
            return []  # a call nobody recorded the beginning of
        parties = self._parties_of(NameAddr(stored.caller), NameAddr(stored.callee))
        return self._lamps(self._begin(req.call_id, parties), "terminated")

    def _begin(self, call_id: str, parties: tuple[Party, ...]) -> LiveCall:
        """Every call is filed under each party of ours, watched or not, so that a watcher
        who subscribes mid-call sees it; its state is kept once, for all of them."""
        call = self._live[call_id] = LiveCall(call_id, parties)
        for party in parties:
            calls = self.calls.get(party[0])
            if calls is None:
                calls = self.calls[party[0]] = {}
            calls[call_id] = call
        while len(self._live) > MAX_CALL_ENTITIES:
            oldest = self._live.pop(next(iter(self._live)))
            for party in oldest.parties:
                self._forget(party[0], oldest.id)
        while len(self.calls) > MAX_CALL_ENTITIES:
            del self.calls[next(iter(self.calls))]
        return call

    def _lamps(self, call: LiveCall, state: str) -> list[str]:
        if call.state == state:
            return []  # a second 18x: nothing new for the lamps
        call.state = state
        ended = state == "terminated"
        if ended:
            self._live.pop(call.id, None)
        changed: list[str] = []
        unwatched = self.subscriptions.unwatched
        for entity, watch, *_ in call.parties:
            if not unwatched(watch):
                changed.append(entity)  # a terminated call stays until its NOTIFY has been made
            elif ended:
                self._forget(entity, call.id)
        return changed

    def _forget(self, entity: str, call_id: str) -> None:
        calls = self.calls.get(entity)
        if calls is not None:
            calls.pop(call_id, None)
            if not calls:
                del self.calls[entity]

    async def notify_lamps(self, call_id: str, entities: list[str]) -> list[Notify]:
        """The NOTIFYs for the dialog watchers of the entities whose call changed."""
        out: list[Notify] = []
        for entity in entities:
            out += await self._notify_watchers(entity, PACKAGES["dialog"])
            call = self.calls.get(entity, _NO_CALLS).get(call_id)
            if call is not None and call.state == "terminated":
                self._forget(entity, call_id)
        return out

    def _parties_of(self, caller: NameAddr, callee: NameAddr) -> tuple[Party, ...]:
        """(entity, its dialog watchers' key, direction, local URI, remote URI) for each party of
        ours, worked out once per call from its INVITE's From and To (a BYE may come from either side);
        the same two users call each other again and again, so the answer is kept by their URIs."""
        return self._parties_by_uris((caller.uri_text, callee.uri_text))

    def _parties_for(self, uris: tuple[str, str]) -> tuple[Party, ...]:
        caller, callee = uris
        out = []
        for me, other, direction in ((caller, callee, "initiator"), (callee, caller, "recipient")):
            uri = parse_uri(me)
            if uri.is_sip and uri.user and self.is_local(uri.host):
                entity = aor_of(uri, self.domain_of)
                out.append((entity, resource_key(entity, "dialog"), direction, me, other))
        return tuple(out)

    # -- NOTIFY ----------------------------------------------------------------------------
    async def expire(self) -> list[Notify]:
        """Called once a second: final NOTIFYs for the subscriptions that ran out,
        and the changes held back by the rate limit whose interval has passed."""
        out = []
        now = self.clock()
        for sub in await self.subscriptions.expired(now):
            await self.subscriptions.remove(sub.key)
            out.append(await self._notify(sub, package_for(sub.event), "terminated;reason=timeout"))
        due = [key for key, at in self._held.items() if at <= now]
        for key in due:
            del self._held[key]
            held = await self.subscriptions.get(key)
            if held is not None and held.expires_at > now:
                out.append(await self._notify(held, package_for(held.event)))
        return out

    async def gone(self, key: str) -> None:
        """A NOTIFY was answered 481 or never answered: the watcher is gone (RFC 6665 §4.2.2)."""
        await self.subscriptions.remove(key)

    async def _notify_watchers(self, resource: str, package: EventPackage) -> list[Notify]:
        """One document for every watcher of the resource (a fan-out reads the state once)."""
        watchers = await self.subscriptions.watching(resource_key(resource, package.name))
        if not watchers:
            return []
        document = await self._document(resource, package)
        return [await self._notify(sub, package, document=document) for sub in watchers if not self._hold(sub.key)]

    def _hold(self, key: str) -> bool:
        """Rate limit (`notify_interval`): a change within the interval after this
        subscription's last NOTIFY waits, and the interval's last state goes out
        at its end (from expire())."""
        if not self.notify_interval:
            return False
        now = self.clock()
        last = self._sent.get(key)
        if key in self._held or (last is not None and now - last < self.notify_interval):
            self._held.setdefault(key, (last or now) + self.notify_interval)
            return True
        return False

    async def _document(self, resource: str, package: EventPackage) -> bytes:
        calls = self.calls.get(resource) if package.name == "dialog" else None
        if calls:
            return dialog_info(f"sip:{resource}", 0, [call.seen_by(resource) for call in calls.values()])
        published = await self.publications.lookup(resource_key(resource, package.name))
        return package.document(f"sip:{resource}", [p.body for p in published])

    async def _notify(self, sub: Subscription, package: EventPackage, state: str | None = None,
                      document: bytes | None = None) -> Notify:
        """The next NOTIFY of a subscription, with the resource's current document;
        a live subscription is stored with its new CSeq."""
        sub = sub.next_notify()
        if self.notify_interval:
            self._sent[sub.key] = self.clock()
            while len(self._sent) > MAX_CALL_ENTITIES:
                del self._sent[next(iter(self._sent))]
        if state is None:
            state = f"active;expires={max(0, round(sub.expires_at - self.clock()))}"
            await self.subscriptions.update(sub)
        if document is None:
            document = await self._document(sub.resource, package)
        if package.name == "dialog":
            document = _VERSION.sub(rb"\g<1>" + str(sub.version).encode() + rb"\g<2>", document, count=1)
        headers = [("Max-Forwards", "70"), *(("Route", r) for r in sub.route_set),
                   ("From", f"<{sub.resource_uri}>;tag={sub.local_tag}"),
                   ("To", f"<{sub.watcher_uri}>;tag={sub.remote_tag}"), ("Call-ID", sub.call_id),
                   ("CSeq", f"{sub.cseq} NOTIFY"), ("Contact", f"<{self.contact()}>"), ("Event", sub.event),
                   ("Subscription-State", state), ("Content-Type", package.content_type)]
        return sub, Request.build("NOTIFY", sub.remote_target, headers, document)

    # -- shared ----------------------------------------------------------------------------
    def _ok(self, req: Request, expires: int, tag: str) -> Response:
        return make_response(req, 200, headers=[("Expires", str(expires)), ("Contact", f"<{self.contact()}>")],
                             to_tag=tag)
