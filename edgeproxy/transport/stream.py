"""TCP, TLS and WebSocket connections: one asyncio protocol, a codec per kind.

The connection enforces what a hostile peer could abuse: the caps of the
connection table, an idle timeout, a bounded read buffer (the codec's) and
a bounded write buffer (a peer that stops reading is cut off).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from edgeproxy.sip import SipError, error_response

from .base import Address, SendError, Source
from .codecs import Codec, CodecClosed, Reply

if TYPE_CHECKING:
    from .connections import ConnectionTable

log = structlog.get_logger(__name__)

MAX_WRITE_BUFFER = 1 << 20


class StreamConnection(asyncio.Protocol):
    def __init__(
        self,
        transport_name: str,
        codec: Codec,
        table: ConnectionTable,
        on_message: Callable[[bytes, Source], None],
        idle_timeout: float,
        inbound: bool = True,
    ) -> None:
        self.transport = transport_name
        self.codec = codec
        self.table = table
        self.on_message = on_message
        self.idle_timeout = idle_timeout
        self.inbound = inbound
        self.remote: Address = ("", 0)
        self.local: Address = ("", 0)
        self._io: asyncio.Transport | None = None
        self._last_activity = 0.0
        self._idle_handle: asyncio.TimerHandle | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        io: asyncio.Transport = transport  # type: ignore[assignment]
        self._io = io
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.remote = (peer[0], peer[1])
        self.local = (sock[0], sock[1])
        if self.inbound and not self.table.admit(self.remote[0]):
            log.warning("connection refused: limit reached", transport=self.transport, remote=self.remote)
            io.abort()
            return
        self.table.add(self)
        io.set_write_buffer_limits(high=MAX_WRITE_BUFFER)
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        self._idle_handle = loop.call_later(self.idle_timeout, self._check_idle)
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._last_activity = asyncio.get_running_loop().time()
        try:
            items = self.codec.feed(data)
        except SipError as err:
            self._refuse(err)
            return
        except CodecClosed as closed:
            self._write(closed.reply)
            self.close()
            return
        source = Source(self.transport, self.remote, self.local, self)
        for item in items:
            if isinstance(item, Reply):
                self._write(item)
            else:
                self.on_message(item, source)

    def connection_lost(self, exc: Exception | None) -> None:
        self.table.remove(self)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        if not self.connected.done():
            self.connected.set_exception(ConnectionError("connection lost"))

    # -- ours ------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._io is None or self._io.is_closing()

    def send(self, data: bytes) -> None:
        if self.closed:
            raise SendError(f"{self.transport} connection to {self.remote} is closed")
        self._write(self.codec.encode(data))

    def close(self) -> None:
        if self._io is not None and not self._io.is_closing():
            self._io.close()

    def _write(self, data: bytes) -> None:
        io = self._io
        if io is None or io.is_closing() or not data:
            return
        io.write(data)
        if io.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("peer not reading: connection dropped", transport=self.transport, remote=self.remote)
            io.abort()

    def _refuse(self, err: SipError) -> None:
        """The stream can no longer be framed: answer if we can, then close."""
        resp = error_response(err)
        if resp is not None:
            self._write(self.codec.encode(resp.to_bytes()))
        log.info("stream framing error", transport=self.transport, remote=self.remote, status=err.status,
                 reason=err.reason)
        self.close()

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_activity
        if idle >= self.idle_timeout:
            log.debug("idle connection closed", transport=self.transport, remote=self.remote)
            self.close()
        else:
            self._idle_handle = loop.call_later(self.idle_timeout - idle, self._check_idle)
