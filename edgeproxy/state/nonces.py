"""Digest nonce-count replay protection (RFC 7616 §3.4): per nonce, the
highest nc seen; a request must bring a higher one."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class NonceCounter(Protocol):
    async def advance(self, nonce: str, nc: int, ttl: float) -> bool:
        """Record nc for nonce if it is higher than any seen; False means replay."""
        ...

    async def close(self) -> None: ...


class MemoryNonceCounter:
    """Bounded: past `max_entries` the oldest nonces are forgotten (they
    expire soon anyway; the nonce's own lifetime still limits replays)."""

    def __init__(self, max_entries: int = 1_000_000, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    async def advance(self, nonce: str, nc: int, ttl: float) -> bool:
        now = self.clock()
        last = self._seen.get(nonce)
        if last is not None and last[1] > now and nc <= last[0]:
            return False
        self._seen[nonce] = (nc, now + ttl)
        self._seen.move_to_end(nonce)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return True

    async def close(self) -> None:
        self._seen.clear()
