"""What transports hand to the core and what the core hands back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from, and so where its answers go."""

    transport: str  # udp | tcp | tls | ws | wss
    remote: Address
    local: Address
    connection: Connection | None = None  # None for UDP

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send: a transport and an address (and the connection, if known)."""

    transport: str
    address: Address
    connection: Connection | None = None


class SendError(Exception):
    """The message could not be written (no connection, connect failed, buffer full)."""
