"""Every listening socket and connection of one instance, and `send`."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

import structlog

from edgeproxy.config import Config, ListenSpec
from edgeproxy.sip import Limits

from .base import Address, SendError, Source, Target
from .codecs import SipStreamCodec, WebSocketCodec
from .connections import ConnectionTable
from .overload import LoadShedder
from .stream import StreamConnection
from .udp import UdpEndpoint, bind_socket, open_udp
from .workers import WorkerLink

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT = 5.0
# on_error(err, context): a bound method and its context, so a send allocates no closure
ErrorCallback = Callable[[Exception, Any], None]


def server_tls_context(config: Config) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert config.tls.cert_file and config.tls.key_file
    ctx.load_cert_chain(config.tls.cert_file, config.tls.key_file)
    return ctx


def client_tls_context(config: Config) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=config.tls.ca_file)
    if not config.tls.verify_peer:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TransportManager:
    def __init__(self, config: Config, on_message: Callable[[bytes, Source], None]) -> None:
        self.config = config
        self.on_message = on_message
        limits = config.limits
        self.limits = Limits(max_message=limits.max_message_size, max_headers=limits.max_headers,
                             max_line=limits.max_line)
        self.table = ConnectionTable(limits.max_connections, limits.max_connections_per_ip)
        self.udp: dict[Address, UdpEndpoint] = {}
        self.shedder = LoadShedder(limits.overload_queue)  # one for every UDP socket of this process
        self._udp_by_family: dict[bool, UdpEndpoint] = {}  # IPv6? → the socket to send from
        self.servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._client_tls: ssl.SSLContext | None = None
        self.bound: list[tuple[ListenSpec, Address]] = []  # actual addresses (port 0 resolved)
        self.link: WorkerLink | None = None  # the sibling workers, with server.workers > 1

    def join(self, link: WorkerLink) -> None:
        """Work as one of several workers: siblings learn which peers our connections reach."""
        self.link = link
        self.table.on_change = link.announce

    async def start(self) -> None:
        for spec in self.config.server.listen:
            await self._listen(spec)

    async def _listen(self, spec: ListenSpec) -> None:
        if spec.transport == "udp":
            endpoint = await open_udp(spec.host, spec.port, self.on_message, self.limits.max_message,
                                      self.shedder)
            self.udp[endpoint.local] = endpoint
            self._udp_by_family.setdefault(":" in endpoint.local[0], endpoint)
            self.bound.append((spec, endpoint.local))
            log.info("listening", transport="udp", address=endpoint.local)
            return
        loop = asyncio.get_running_loop()
        sock = bind_socket(spec.host, spec.port, socket.SOCK_STREAM)
        tls = server_tls_context(self.config) if spec.secure else None
        server = await loop.create_server(lambda: self._stream(spec.transport, inbound=True), sock=sock, ssl=tls,
                                          backlog=1024)
        self.servers.append(server)
        address = server.sockets[0].getsockname()[:2]
        self.bound.append((spec, address))
        log.info("listening", transport=spec.transport, address=address)

    def _stream(self, transport: str, inbound: bool) -> StreamConnection:
        codec = WebSocketCodec(self.limits) if transport in ("ws", "wss") else SipStreamCodec(self.limits)
        return StreamConnection(transport, codec, self.table, self.on_message, self.config.limits.idle_timeout,
                                inbound)

    def shed_load(self) -> None:
        """Called every timer tick: the shedder looks at the fullest UDP receive queue."""
        self.shedder.update(max((endpoint.queued() for endpoint in self.udp.values()), default=0.0))

    # -- sending ---------------------------------------------------------------
    def send(self, data: bytes, target: Target, on_error: ErrorCallback | None = None, context: Any = None) -> None:
        """Write at once when possible; open a TCP/TLS connection in the background
        when none exists (on_error(err, context) hears about a failure)."""
        try:
            if target.transport == "udp":
                self._udp_for(target.address).send(data, target.address)
                return
            conn = target.connection
            if conn is None or conn.closed:
                conn = self.table.find(target.transport, target.address)
            if conn is not None:
                conn.send(data)
                return
            if self.link is not None:
                worker = self.link.holder(target.transport, target.address)
                if worker is not None:
                    self.link.write_through(worker, data, target)
                    return
            if target.transport in ("ws", "wss"):
                raise SendError(f"no websocket connection to {target.address}")
        except SendError as err:
            self._report(err, on_error, context)
            return
        task = asyncio.get_running_loop().create_task(self._connect_and_send(data, target, on_error, context))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def connected(self, transport: str, address: Address) -> bool:
        """Whether a connection to that peer is open here (or in a sibling worker)."""
        if self.table.find(transport, address) is not None:
            return True
        return self.link is not None and self.link.holder(transport, address) is not None

    def write_held(self, data: bytes, target: Target) -> None:
        """A sibling worker's message for a peer whose connection is ours."""
        conn = self.table.find(target.transport, target.address)
        try:
            if conn is None:
                raise SendError(f"no {target.transport} connection to {target.address} any more")
            conn.send(data)
        except SendError as err:  # the sibling's transaction times out, as if the peer were gone
            log.info("send for a sibling worker failed", error=str(err))

    async def _connect_and_send(self, data: bytes, target: Target, on_error: ErrorCallback | None,
                                context: Any) -> None:
        try:
            conn = await self.connect(target.transport, target.address)
            conn.send(data)
        except (TimeoutError, OSError, SendError, ssl.SSLError) as err:
            error = err if isinstance(err, SendError) else SendError(str(err) or type(err).__name__)
            self._report(error, on_error, context)

    async def connect(self, transport: str, address: Address) -> StreamConnection:
        """An outbound TCP/TLS connection (reused later for that peer)."""
        loop = asyncio.get_running_loop()
        tls = None
        if transport == "tls":
            if self._client_tls is None:
                self._client_tls = client_tls_context(self.config)
            tls = self._client_tls
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: self._stream(transport, inbound=False), address[0], address[1], ssl=tls),
            CONNECT_TIMEOUT,
        )
        await conn.connected
        return conn

    def _udp_for(self, address: Address) -> UdpEndpoint:
        """The UDP socket to send from: the first one of the destination's family."""
        v6 = ":" in address[0]
        endpoint = self._udp_by_family.get(v6)
        if endpoint is None:
            raise SendError(f"no UDP socket for {'IPv6' if v6 else 'IPv4'} destination {address}")
        return endpoint

    @staticmethod
    def _report(err: SendError, on_error: ErrorCallback | None, context: Any) -> None:
        if on_error is not None:
            on_error(err, context)
        else:
            log.info("send failed", error=str(err))

    # -- lifecycle ---------------------------------------------------------------
    def stop_listening(self) -> None:
        for server in self.servers:
            server.close()

    async def close(self) -> None:
        self.stop_listening()
        if self.link is not None:
            self.link.close()
        for endpoint in self.udp.values():
            endpoint.close()
        for conn in self.table.connections():
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)
