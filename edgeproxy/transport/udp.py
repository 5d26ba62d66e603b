"""UDP: one socket per listen address, shared by worker processes (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable

import structlog

from .base import Address, Source
from .overload import LoadShedder

log = structlog.get_logger(__name__)

BUFFER_BYTES = 4 << 20  # large buffers absorb bursts (the kernel caps them at rmem_max)
# Linux getsockopt SO_MEMINFO: u32 counters, [0] the receive queue's bytes, [1] its limit (rcvbuf)
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
_MEMINFO_BYTES = 9 * 4


def receive_queue(sock: socket.socket) -> tuple[int, int]:
    """(bytes waiting in the socket's receive queue, the most it may hold), as the kernel counts
    them (each datagram with its overhead); raises OSError where SO_MEMINFO is missing. The count
    lags while a backlog drains: UDP releases the memory of datagrams already read in bulk (its
    forward_deficit, under a quarter of the buffer, or when the reader's queue empties), so a
    backlog being read still counts as it was when the kernel handed it to the reader."""
    info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO_BYTES)
    return int.from_bytes(info[0:4], sys.byteorder), int.from_bytes(info[4:8], sys.byteorder)


def buffer_shortfall(sock: socket.socket) -> int | None:
    """The receive buffer the kernel granted, when smaller than asked (it caps SO_RCVBUF at
    net.core.rmem_max, 212,992 bytes on a stock Debian: ~400 SIP datagrams, and load shedding's
    share of it is a burst of ~100); None when the socket got what it asked for."""
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux reports it doubled
    return granted if granted < BUFFER_BYTES else None


def bind_socket(host: str, port: int, kind: int) -> socket.socket:
    """A bound socket with SO_REUSEADDR/SO_REUSEPORT (and v6-only for IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Source], None], max_size: int, shedder: LoadShedder) -> None:
        self.on_datagram = on_datagram
        self.max_size = max_size
        self.shedder = shedder
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        self._socket: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's UDPTransport
        self.local = transport.get_extra_info("sockname")[:2]
        self._socket = transport.get_extra_info("socket")

    def queued(self) -> float:
        """The share of the receive buffer waiting to be read (0 where the kernel cannot tell)."""
        if self._socket is None:
            return 0.0
        try:
            queued, limit = receive_queue(self._socket)
        except OSError:  # not Linux, or the socket is closed
            return 0.0
        return queued / limit if limit else 0.0

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        if len(data) > self.max_size or data in (b"\r\n\r\n", b"\r\n", b"\x00\x00\x00\x00"):
            return  # oversize, or a NAT keep-alive: nothing to answer on UDP
        if self.shedder.active and self.shedder.sheds(data):
            return  # overloaded: a new request, left for its sender to retransmit
        self.on_datagram(data, Source("udp", (addr[0], addr[1]), self.local))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error", error=str(exc))

    def send(self, data: bytes, address: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, address)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_udp(host: str, port: int, on_datagram: Callable[[bytes, Source], None], max_size: int,
                   shedder: LoadShedder) -> UdpEndpoint:
    loop = asyncio.get_running_loop()
    sock = bind_socket(host, port, socket.SOCK_DGRAM)
    short = buffer_shortfall(sock)
    if short is not None:
        log.warning("udp receive buffer smaller than asked: raise net.core.rmem_max (see README, [limits])",
                    address=f"{host}:{port}", granted=short, asked=BUFFER_BYTES)
    _, endpoint = await loop.create_datagram_endpoint(lambda: UdpEndpoint(on_datagram, max_size, shedder), sock=sock)
    return endpoint
