"""Subscriptions (RFC 6665): each one a dialog in which the presence server
is the notifier. The store keeps them by dialog and by what they watch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol


def resource_key(resource: str, event: str) -> str:
    """The key of one resource's state for one event package, in the publication and
    subscription stores ("alice@example.com|presence")."""
    return f"{resource}|{event}"


@dataclass(frozen=True, slots=True)
class Subscription:
    call_id: str
    local_tag: str  # our To tag: with the Call-ID, the dialog's key
    remote_tag: str
    event: str
    resource: str  # the watched AoR (alice@example.com)
    resource_uri: str  # as the watcher named it: the From of our NOTIFYs
    watcher_uri: str  # the To of our NOTIFYs
    remote_target: str  # the watcher's Contact
    route_set: tuple[str, ...] = ()  # from the SUBSCRIBE's Record-Route, in order
    source: str = ""  # "udp:IP:PORT" the SUBSCRIBE came from (NAT: NOTIFYs go there)
    behind_nat: bool = False
    expires_at: float = 0.0
    cseq: int = 0  # of the last NOTIFY we sent
    remote_cseq: int = 0
    version: int = 0  # dialog-info documents are numbered per subscription (RFC 4235 §4.1)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.call_id};{self.local_tag}"

    @property
    def watched(self) -> str:
        return resource_key(self.resource, self.event)

    def next_notify(self) -> Subscription:
        return replace(self, cseq=self.cseq + 1, version=self.version + 1)


class SubscriptionStore(Protocol):
    async def get(self, key: str) -> Subscription | None: ...

    async def put(self, sub: Subscription) -> None:
        """Store a new or refreshed subscription (its expiry may have changed)."""
        ...

    async def update(self, sub: Subscription) -> None:
        """Store what changed in a subscription that is already stored (its CSeq, version)."""
        ...

    async def remove(self, key: str) -> None: ...

    async def watching(self, watched: str) -> list[Subscription]:
        """Live subscriptions to one resource and event ("alice@example.com|presence")."""
        ...

    def unwatched(self, watched: str) -> bool:
        """True only when it is known at once, without asking a server, that nobody
        watches the resource: a call's BLF lamps cost nothing when nobody looks."""
        ...

    async def expired(self, now: float) -> list[Subscription]:
        """Subscriptions past their expiry, for their final NOTIFY; each is handed
        out once, to one instance (the caller then removes what is left of it)."""
        ...

    async def count(self) -> int:
        """Subscriptions held (the `edgeproxy_subscriptions` gauge)."""
        ...

    async def start(self) -> None:
        """Before the first request: what the store must know locally, loaded."""
        ...

    async def close(self) -> None: ...


class MemorySubscriptionStore:
    """Bounded by `max_subscriptions`: put() beyond it raises OverflowError (the SUBSCRIBE gets 503)."""

    def __init__(self, max_subscriptions: int = 1_000_000, clock: Callable[[], float] = time.time) -> None:
        self.max_subscriptions = max_subscriptions
        self.clock = clock
        self._subs: dict[str, Subscription] = {}
        self._by_watched: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._subs)

    async def get(self, key: str) -> Subscription | None:
        return self._subs.get(key)

    async def put(self, sub: Subscription) -> None:
        if sub.key not in self._subs and len(self._subs) >= self.max_subscriptions:
            raise OverflowError("subscription table full")
        self._subs[sub.key] = sub
        self._by_watched.setdefault(sub.watched, set()).add(sub.key)

    async def update(self, sub: Subscription) -> None:
        if sub.key in self._subs:
            self._subs[sub.key] = sub

    async def remove(self, key: str) -> None:
        sub = self._subs.pop(key, None)
        if sub is not None:
            keys = self._by_watched.get(sub.watched)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_watched[sub.watched]

    def unwatched(self, watched: str) -> bool:
        return watched not in self._by_watched

    async def watching(self, watched: str) -> list[Subscription]:
        keys = self._by_watched.get(watched)
        if not keys:
            return []  # the common case for a call's parties: nobody watches them
        now = self.clock()
        subs = (self._subs.get(k) for k in keys)
        return [s for s in subs if s is not None and s.expires_at > now]

    async def expired(self, now: float) -> list[Subscription]:
        due = [s for s in self._subs.values() if s.expires_at <= now]
        for s in due:
            await self.remove(s.key)
        return due

    async def count(self) -> int:
        return len(self._subs)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._subs.clear()
        self._by_watched.clear()
