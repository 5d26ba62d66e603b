"""The location service: bindings of an address-of-record, and their store.

`update` is the only write: an atomic read-modify-write of one AoR's
bindings. `change` receives the unexpired bindings and returns the new set;
it must be a pure function, because a store may call it again when another
instance wrote the same AoR in between.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .errors import StoreFull

Change = Callable[[list["Binding"]], list["Binding"]]


@dataclass(slots=True)
class Binding:
    contact: str  # the Contact URI registered: where requests for the AoR go
    expires_at: float  # wall-clock seconds (shared by every instance)
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    path: list[str] = field(default_factory=list)  # Path values, top first (RFC 3327)
    instance: str | None = None  # +sip.instance (RFC 5626)
    reg_id: int | None = None
    params: str = ""  # Contact header parameters to echo (feature tags…), expires/q excluded
    source: str = ""  # "udp:203.0.113.5:40000": where the REGISTER came from
    behind_nat: bool = False  # reach it at `source`: behind NAT, or only reachable over its connection
    edge: str = ""  # instance id that received it (holds the client's flow)
    user_agent: str = ""

    @property
    def identity(self) -> str:
        """What makes two registrations the same binding: the device (RFC 5626) or the URI."""
        if self.instance is not None:
            return f"{self.instance}#{self.reg_id}" if self.reg_id is not None else self.instance
        return self.contact

    def remaining(self, now: float) -> int:
        return max(0, round(self.expires_at - now))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "", [], False)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Binding:
        return cls(**data)


def live(bindings: list[Binding], now: float) -> list[Binding]:
    return [b for b in bindings if b.expires_at > now]


def by_q(bindings: list[Binding]) -> list[Binding]:
    """Highest q first; among equals, the most recent registration first."""
    return sorted(bindings, key=lambda b: (-b.q, -b.expires_at))


class LocationStore(Protocol):
    async def lookup(self, aor: str) -> list[Binding]:
        """Unexpired bindings of an AoR, highest q first."""
        ...

    async def update(self, aor: str, change: Change) -> list[Binding]:
        """Atomically replace an AoR's bindings with change(current); returns the new set."""
        ...

    async def count(self) -> int:
        """Unexpired bindings of every AoR (the `edgeproxy_bindings` gauge)."""
        ...

    async def close(self) -> None: ...


class MemoryLocationStore:
    """The embedded default: one process, bounded by `max_aors`, expired
    bindings dropped on access and by a sweep driven by writes."""

    def __init__(self, max_aors: int = 1_000_000, clock: Callable[[], float] = time.time) -> None:
        self.max_aors = max_aors
        self.clock = clock
        self._aors: dict[str, list[Binding]] = {}
        self._bindings = 0  # stored bindings, summed over _aors
        self._expiries: list[tuple[float, str]] = []  # (a binding's expiry, aor), may hold stale entries

    def __len__(self) -> int:
        return len(self._aors)

    async def lookup(self, aor: str) -> list[Binding]:
        bindings = self._aors.get(aor)
        if not bindings:
            return []
        return by_q(live(bindings, self.clock()))

    async def update(self, aor: str, change: Change) -> list[Binding]:
        now = self.clock()
        self._sweep(now)
        current = live(self._aors.get(aor, []), now)
        new = live(change(list(current)), now)
        if not new:
            self._store(aor, [])
            return []
        if aor not in self._aors and len(self._aors) >= self.max_aors:
            raise StoreFull(f"location store holds {self.max_aors} AoRs")
        self._store(aor, new)
        for b in new:
            heapq.heappush(self._expiries, (b.expires_at, aor))
        return by_q(new)

    async def count(self) -> int:
        self._sweep(self.clock(), budget=len(self._expiries))
        return self._bindings

    def _store(self, aor: str, bindings: list[Binding]) -> None:
        old = self._aors.pop(aor, None)
        self._bindings += len(bindings) - (len(old) if old else 0)
        if bindings:
            self._aors[aor] = bindings

    def _sweep(self, now: float, budget: int = 64) -> None:
        """Every live binding has a heap entry with its expiry, so an AoR is
        visited as soon as any of its bindings lapses."""
        heap = self._expiries
        while heap and heap[0][0] <= now and budget:
            _, aor = heapq.heappop(heap)
            budget -= 1
            bindings = self._aors.get(aor)
            if bindings is not None:
                self._store(aor, live(bindings, now))
        if len(heap) > 4 * self._bindings + 1024:  # stale entries from refreshes: rebuild
            self._expiries = [(b.expires_at, k) for k, v in self._aors.items() for b in v]
            heapq.heapify(self._expiries)

    async def close(self) -> None:
        self._aors.clear()
        self._bindings = 0
