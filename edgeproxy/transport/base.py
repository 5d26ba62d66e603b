"""What transports hand to the core and what the core hands back."""

from __future__ import annotations

from typing import NamedTuple, Protocol

Address = tuple[str, int]  # (ip, port); IPv6 without brackets

RELIABLE = frozenset({"tcp", "tls", "ws", "wss"})


class Connection(Protocol):
    """A stream (TCP, TLS, WebSocket) a message can be written to."""

    transport: str
    remote: Address
    local: Address

    @property
    def closed(self) -> bool: ...

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class Source(NamedTuple):
    """Where a message came from, and so where its answers go (one per datagram: a
    NamedTuple, the cheapest immutable record to build)."""

    transport: str  # udp | tcp | tls | ws | wss
    remote: Address
    local: Address
    connection: Connection | None = None  # None for UDP

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE


class Target(NamedTuple):
    """Where to send: a transport and an address (and the connection, if known)."""

    transport: str
    address: Address
    connection: Connection | None = None


class SendError(Exception):
    """The message could not be written (no connection, connect failed, buffer full)."""
