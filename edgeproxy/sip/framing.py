"""Cutting a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3, RFC 5626 §3.5.1)."""

from __future__ import annotations

from .errors import SipError, bad_request
from .parser import DEFAULT_LIMITS, Limits, split_message

# A double-CRLF keep-alive "ping"; the server answers with one CRLF ("pong").
KEEPALIVE = b"\r\n\r\n"
PONG = b"\r\n"


class StreamFramer:
    """Feed bytes as they arrive; get whole messages (and keep-alive pings) back.

    The buffer never holds more than one message's worth (`limits.max_message`):
    past that, `feed` raises SipError (413/513/400) and the connection must be
    closed, because the stream can no longer be framed.
    """

    __slots__ = ("_buf", "_limits", "_need")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._buf = bytearray()
        self._limits = limits
        self._need = 0  # total bytes the message at the buffer head needs, once known

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        while buf:
            if self._need:
                if len(buf) < self._need:
                    break
                frames.append(bytes(buf[: self._need]))
                del buf[: self._need]
                self._need = 0
                continue
            if buf[0] in b"\r\n":
                if buf.startswith(KEEPALIVE):
                    frames.append(KEEPALIVE)
                    del buf[:4]
                elif buf.startswith(b"\r\n") and len(buf) > 2 and buf[2:3] != b"\r":
                    del buf[:2]  # a lone CRLF (pong, or padding between messages)
                elif buf[:1] == b"\n":
                    del buf[:1]
                else:
                    break  # wait: it may become a ping
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._limits.max_message:
                    raise SipError(513, "Message Too Large")
                break
            head_len = end + 4
            size = head_len + self._content_length(bytes(buf[:head_len]))
            if size > self._limits.max_message:
                raise SipError(513, "Message Too Large")
            self._need = size
        return frames

    @staticmethod
    def _content_length(head: bytes) -> int:
        for line in head.split(b"\r\n")[1:]:
            if line[:1] not in b"cClL" or not line:
                continue
            name, _, value = line.partition(b":")
            name = name.rstrip(b" \t").lower()
            if name == b"content-length" or name == b"l":
                value = value.strip()
                if not value.isdigit() or len(value) > 10:
                    split_message(head, stream=True)  # raises with the message attached
                    raise bad_request("Malformed Content-Length")
                return int(value)
        return 0
