"""Parse once per text: values that repeat from message to message (URIs, From/To)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class _Table(dict[K, T], Generic[K, T]):
    """A dict that fills itself: a hit is one C-level lookup, with no Python frame."""

    __slots__ = ("limit", "parse")

    def __init__(self, parse: Callable[[K], T], limit: int) -> None:
        super().__init__()
        self.parse, self.limit = parse, limit

    def __missing__(self, key: K) -> T:
        value = self.parse(key)
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


def parsed_once(parse: Callable[[K], T], limit: int = 8192) -> Callable[[K], T]:
    """`parse` memoised by its argument (a text, or a tuple of texts) in a table of at most
    `limit` entries that starts afresh when full: a flood of distinct texts costs a bounded
    table, never growth. Failures are not kept (they raise every time). The values are
    shared: never change one."""
    return _Table(parse, limit).__getitem__
