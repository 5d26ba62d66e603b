"""Parse once per text: values that repeat from message to message (URIs, From/To)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def parsed_once(parse: Callable[[K], T], limit: int = 8192) -> Callable[[K], T]:
    """`parse` memoised by its argument (a text, or a tuple of texts) in a table of at most
    `limit` entries that starts afresh when full: a flood of distinct texts costs a bounded
    table, never growth. Failures are not kept (they raise every time). The values are
    shared: never change one."""
    table: dict[K, T] = {}
    get = table.get

    @functools.wraps(parse)
    def once(key: K) -> T:
        value = get(key)
        if value is None:
            value = parse(key)
            if len(table) >= limit:
                table.clear()
            table[key] = value
        return value

    return once
