"""Tags, branches and other identifiers: cryptographically random (RFC 3261
§19.3 wants at least 32 random bits in a tag), drawn from a pool so that one
os.urandom call serves hundreds of messages.

With several worker processes every branch a worker writes ends in its mark
(`.w<index>`): the response may reach any worker (they share the port), and
the mark says which one holds the transaction."""

from __future__ import annotations

import os
import re

_POOL_SIZE = 4096


class _RandomPool:
    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def hex(self, nbytes: int) -> str:
        pos = self._pos
        if pos + nbytes > len(self._buf):
            self._buf = os.urandom(_POOL_SIZE)
            pos = 0
        self._pos = pos + nbytes
        return self._buf[pos : pos + nbytes].hex()


_pool = _RandomPool()
random_hex = _pool.hex


_worker_mark = ""
_BRANCH = re.compile(rb";\s*branch\s*=\s*([^;,\s]+)", re.IGNORECASE)


def set_worker(index: int | None) -> None:
    """Mark the branches this process writes (None: a single process, no mark)."""
    global _worker_mark
    _worker_mark = "" if index is None else f".w{index}"


def worker_mark() -> str:
    return _worker_mark


def branch_worker(data: bytes) -> int | None:
    """The worker whose mark ends the first branch in a raw message (the top Via's), if any."""
    found = _BRANCH.search(data)
    if found is None:
        return None
    token = found.group(1)
    mark = token.rfind(b".w")
    return int(token[mark + 2 :]) if mark >= 0 and token[mark + 2 :].isdigit() else None


def new_tag() -> str:
    return random_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + random_hex(8) + _worker_mark


def new_call_id() -> str:
    return random_hex(12)
