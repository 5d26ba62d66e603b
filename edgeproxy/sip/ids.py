"""Tags, branches and other identifiers: cryptographically random (RFC 3261
§19.3 wants at least 32 random bits in a tag), drawn from a pool so that one
os.urandom call serves hundreds of messages."""

from __future__ import annotations

import os

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


def new_tag() -> str:
    return random_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + random_hex(8)


def new_call_id() -> str:
    return random_hex(12)
