"""How SIP messages ride a byte stream: raw SIP over TCP/TLS (RFC 3261 §18.3)
or one message per WebSocket message (RFC 7118). Both are sans-IO: bytes in,
(messages, bytes to write back) out."""

from __future__ import annotations

from typing import Protocol

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Request as WsRequest
from wsproto.utilities import RemoteProtocolError

from edgeproxy.sip import Limits, SipError, StreamFramer
from edgeproxy.sip.framing import KEEPALIVE, PONG


class CodecClosed(Exception):
    """The peer closed the stream at the protocol level (or broke it): write
    `reply` (a close or a rejection), then close."""

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reply = reply


class Reply(bytes):
    """Bytes the codec itself must write back (a pong, a handshake answer)."""


class Codec(Protocol):
    def feed(self, data: bytes) -> list[bytes]:
        """SIP messages and Replies, in stream order."""
        ...

    def encode(self, message: bytes) -> bytes: ...


class SipStreamCodec:
    def __init__(self, limits: Limits) -> None:
        self.framer = StreamFramer(limits)

    def feed(self, data: bytes) -> list[bytes]:
        frames = self.framer.feed(data)  # SipError: framing lost, caller answers and closes
        return [Reply(PONG) if f == KEEPALIVE else f for f in frames]

    def encode(self, message: bytes) -> bytes:
        return message


class WebSocketCodec:
    """Server side of RFC 7118: subprotocol `sip`, a SIP message per WS message."""

    def __init__(self, limits: Limits) -> None:
        self.ws = WSConnection(ConnectionType.SERVER)
        self.max_message = limits.max_message
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> list[bytes]:
        try:
            self.ws.receive_data(data)
            return self._events()
        except RemoteProtocolError as err:
            raise CodecClosed(str(err)) from err

    def _events(self) -> list[bytes]:
        out: list[bytes] = []
        for event in self.ws.events():
            if isinstance(event, WsRequest):
                if "sip" not in event.subprotocols:
                    raise CodecClosed("no 'sip' subprotocol offered", self.ws.send(RejectConnection(status_code=400)))
                out.append(Reply(self.ws.send(AcceptConnection(subprotocol="sip"))))
            elif isinstance(event, (TextMessage, BytesMessage)):
                chunk = event.data.encode("utf-8", "surrogateescape") if isinstance(event, TextMessage) else bytes(event.data)
                self.size += len(chunk)
                if self.size > self.max_message:
                    raise SipError(513, "Message Too Large")
                self.parts.append(chunk)
                if event.message_finished:
                    message = b"".join(self.parts)
                    self.parts, self.size = [], 0
                    if message.strip(b"\r\n"):
                        out.append(message)
                    else:
                        out.append(Reply(self.encode(PONG)))  # a CRLF keep-alive inside a WS message
            elif isinstance(event, Ping):
                out.append(Reply(self.ws.send(event.response())))
            elif isinstance(event, CloseConnection):
                raise CodecClosed("websocket closed by peer", b"".join(out) + self.ws.send(event.response()))
        return out

    def encode(self, message: bytes) -> bytes:
        try:
            return self.ws.send(TextMessage(data=message.decode("utf-8")))
        except UnicodeDecodeError:
            return self.ws.send(BytesMessage(data=message))
