"""The channel between the worker processes of one instance (`server.workers`).

The workers share the listening ports (SO_REUSEPORT), so the kernel picks
the worker a datagram or a connection lands on. Two things cannot be left to
it: a response belongs to the worker that holds its client transaction (the
branch says which: see `sip.ids`), and a message for a client goes over the
TCP/TLS/WebSocket connection that client opened, held by one worker only.
Each worker has a UDP socket on 127.0.0.1 (the supervisor picks the ports:
Unix datagram sockets queue only 10 datagrams by default, too few for a
burst); over it workers hand each other responses, ask each other to write on
a connection, and tell each other which connections they hold. Frames from
any other address are ignored.

A frame is one datagram: a header line (`kind` and addresses, space
separated), a newline, then the SIP message, if any.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import NamedTuple

import structlog

from edgeproxy.observability.metrics import WORKER_MESSAGES

from .base import Address, Source, Target

log = structlog.get_logger(__name__)

# the nonce secret the supervisor hands its workers when registrar.secret is not set
SECRET_ENV = "EDGEPROXY_WORKERS_SECRET"
Key = tuple[str, str, int]  # (transport, ip, port), as in the connection table
BUFFER_BYTES = 4 << 20

MESSAGE = b"M"  # M transport rip rport lip lport: a message received here, for you
SEND = b"S"  # S transport ip port: write this on your connection to ip:port
HELD = b"U"  # U transport ip port: I hold a connection for ip:port
DROPPED = b"D"  # D transport ip port: I no longer do
HELLO = b"H"  # H: I (re)started, forget what I held and tell me what you hold
GONE = b"G"  # G: I stop, forget what I held


LINK_HOST = "127.0.0.1"
_HANDED_OVER = WORKER_MESSAGES.labels("response")
_WRITTEN_THROUGH = WORKER_MESSAGES.labels("write")


class WorkerRole(NamedTuple):
    """What the supervisor tells a worker: its group (names its operations socket),
    its number and every worker's link port."""

    group: str
    number: int
    ports: tuple[int, ...]


class WorkerLink:
    def __init__(self, role: WorkerRole, deliver: Callable[[bytes, Source], None],
                 write_held: Callable[[bytes, Target], None], held_here: Callable[[], list[Key]]) -> None:
        self.index = role.number
        self.count = len(role.ports)
        self._peers = [(LINK_HOST, port) for port in role.ports]
        self._index_of = {peer: i for i, peer in enumerate(self._peers) if i != role.number}
        self._deliver = deliver
        self._write_held = write_held
        self._held_here = held_here
        self._held: dict[Key, int] = {}  # a sibling's connections: bounded by its connection caps
        self._sock: socket.socket | None = None

    def open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
            sock.bind(self._peers[self.index])
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        self._broadcast(HELLO)

    def close(self) -> None:
        if self._sock is not None:
            self._broadcast(GONE)
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    # -- what the transports and the app ask for ----------------------------------
    def hand_over(self, worker: int, data: bytes, source: Source) -> None:
        """A response for a transaction `worker` holds."""
        _HANDED_OVER.inc()
        (rip, rport), (lip, lport) = source.remote, source.local
        self._send(worker, b"%s %s %s %d %s %d" % (MESSAGE, source.transport.encode(), rip.encode(), rport,
                                                     lip.encode(), lport), data)

    def holder(self, transport: str, address: Address) -> int | None:
        """The sibling holding a connection for that peer, if one says it does."""
        return self._held.get((transport, address[0], address[1]))

    def write_through(self, worker: int, data: bytes, target: Target) -> None:
        _WRITTEN_THROUGH.inc()
        self._send(worker, self._header(SEND, (target.transport, *target.address)), data)

    def announce(self, key: Key, held: bool) -> None:
        self._broadcast(self._header(HELD if held else DROPPED, key))

    # -- the socket ------------------------------------------------------------------
    @staticmethod
    def _header(kind: bytes, key: Key) -> bytes:
        return b"%s %s %s %d" % (kind, key[0].encode(), key[1].encode(), key[2])

    def _broadcast(self, header: bytes) -> None:
        for worker in range(self.count):
            if worker != self.index:
                self._send(worker, header)

    def _send(self, worker: int, header: bytes, data: bytes = b"") -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(header + b"\n" + data, self._peers[worker])
        except OSError as err:  # its buffer is full: lost, as a datagram on the wire may be
            log.debug("worker unreachable", worker=worker, error=str(err))

    def _readable(self) -> None:
        assert self._sock is not None
        for _ in range(64):  # a bounded batch: the event loop comes back to the rest
            try:
                frame, sender = self._sock.recvfrom(1 << 16)
            except BlockingIOError:
                return
            except OSError as err:
                log.debug("worker link receive failed", error=str(err))
                return
            worker = self._index_of.get(sender)
            if worker is None:
                continue  # not a sibling
            try:
                self._frame(frame, worker)
            except Exception:  # a frame that cannot be read costs that frame only
                log.exception("bad frame from a sibling worker")

    def _frame(self, frame: bytes, worker: int) -> None:
        header, _, data = frame.partition(b"\n")
        kind, *fields = header.split(b" ")
        words = [f.decode() for f in fields]
        if kind == MESSAGE:
            transport, rip, rport, lip, lport = words
            self._deliver(data, Source(transport, (rip, int(rport)), (lip, int(lport))))
            return
        if kind == SEND:
            transport, ip, port = words
            self._write_held(data, Target(transport, (ip, int(port))))
            return
        if kind in (HELLO, GONE):
            self._forget(worker)
            if kind == HELLO:
                for key in self._held_here():
                    self._send(worker, self._header(HELD, key))
            return
        transport, ip, port = words
        key = (transport, ip, int(port))
        if kind == HELD:
            self._held[key] = worker
        elif kind == DROPPED and self._held.get(key) == worker:
            del self._held[key]

    def _forget(self, worker: int) -> None:
        for key in [k for k, w in self._held.items() if w == worker]:
            del self._held[key]
