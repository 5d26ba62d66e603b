"""PUBLISH (RFC 3903): event state a presentity's devices publish, each
publication named by an entity-tag, with its expiry. Pure rules plus the
store they run against."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edgeproxy.sip import SipError
from edgeproxy.sip.ids import random_hex


@dataclass(frozen=True, slots=True)
class Publication:
    etag: str
    body: bytes
    expires_at: float  # wall clock
    modified: float  # when its body last changed: the newest comes first in a document


Change = Callable[[list[Publication]], list[Publication]]


def new_etag() -> str:
    return random_hex(12)


def apply_publish(current: list[Publication], if_match: str | None, body: bytes, expires: int, now: float,
                  etag: str) -> tuple[list[Publication], Publication | None]:
    """The presentity's publications after one PUBLISH, and the one it leaves
    (None when it removed one). Raises 400 for an initial PUBLISH without a
    body, 412 for an entity-tag that names nothing live (RFC 3903 §6)."""
    if if_match is None:
        if not body:
            raise SipError(400, "Bad Request (initial PUBLISH needs a body)")
        if expires == 0:
            return current, None
        made = Publication(etag, body, now + expires, now)
        return [*current, made], made
    old = next((p for p in current if p.etag == if_match), None)
    if old is None:
        raise SipError(412, "Conditional Request Failed")
    others = [p for p in current if p is not old]
    if expires == 0:
        return others, None
    made = Publication(etag, body or old.body, now + expires, now if body else old.modified)
    return [*others, made], made


def newest_first(publications: list[Publication]) -> list[Publication]:
    return sorted(publications, key=lambda p: p.modified, reverse=True)


class PublicationStore(Protocol):
    async def lookup(self, key: str) -> list[Publication]:
        """Live publications of one presentity and event ("alice@example.com|presence")."""
        ...

    async def update(self, key: str, change: Change) -> list[Publication]:
        """Atomic read-modify-write; `change` gets the live publications and must be pure."""
        ...

    async def close(self) -> None: ...


class MemoryPublicationStore:
    """Bounded: past `max_keys` presentities the least recently written goes."""

    def __init__(self, max_keys: int = 1_000_000, clock: Callable[[], float] = time.time) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._pubs: OrderedDict[str, list[Publication]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pubs)

    def _live(self, key: str) -> list[Publication]:
        now = self.clock()
        return [p for p in self._pubs.get(key, []) if p.expires_at > now]

    async def lookup(self, key: str) -> list[Publication]:
        return newest_first(self._live(key))

    async def update(self, key: str, change: Change) -> list[Publication]:
        new = change(self._live(key))
        if new:
            self._pubs[key] = new
            self._pubs.move_to_end(key)
            while len(self._pubs) > self.max_keys:
                self._pubs.popitem(last=False)
        else:
            self._pubs.pop(key, None)
        return newest_first(new)

    async def close(self) -> None:
        self._pubs.clear()
