"""Counting events per key in fixed windows, the way Kamailio's pike counts
requests per source: cheap (one dict lookup per event) and bounded."""

from __future__ import annotations


class WindowCounter:
    """Events per key within the current window of `window` seconds.

    Every window starts empty, so a key that stops sending is forgotten
    within one window. At most `max_keys` keys are tracked per window: past
    that, new keys are not counted (spoofed-source floods cannot grow
    memory), which fails open for them rather than banning at random.
    """

    __slots__ = ("_counts", "_window_end", "limit", "max_keys", "window")

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._counts: dict[str, int] = {}
        self._window_end = 0.0

    def __len__(self) -> int:
        return len(self._counts)

    def hit(self, key: str, now: float) -> bool:
        """Count one event; True when it takes `key` past the limit (once per window)."""
        if now >= self._window_end:
            self._counts.clear()
            self._window_end = now + self.window
        counts = self._counts
        count = counts.get(key, 0) + 1
        if count == 1 and len(counts) >= self.max_keys:
            return False
        counts[key] = count
        return count == self.limit + 1
