"""Bursts of requests we send, spread over turns of the event loop.

A burst (a NOTIFY fan-out, a round of NAT keep-alives) sent in one turn
keeps the loop from reading for as long as it lasts, and its answers then
arrive all at once: thousands of 200s queued together, which load shedding
takes for an overload (it then drops the next new request) and which may
overflow a small receive buffer. Yielding every PER_TURN sends lets the
answers be read as they come, and other messages wait a few sends, not the
whole burst.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

T = TypeVar("T")

# sends between two turns: uvloop reads at most 32 datagrams from a socket per turn, so each
# turn reads back more than the previous one sent (64 still let the answers pile up on a busy machine)
PER_TURN = 16


async def in_turns(items: Iterable[T]) -> AsyncIterator[T]:
    """`items`, yielding to the event loop after every PER_TURN of them."""
    for done, item in enumerate(items):
        if done and not done % PER_TURN:
            await asyncio.sleep(0)
        yield item
