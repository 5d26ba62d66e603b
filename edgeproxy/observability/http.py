"""The operations endpoint on `[metrics] listen`: GET /metrics (Prometheus
text format), /health (the process answers), /ready (it serves: see
EdgeProxy.readiness; with several workers, every one does) and /calls (the calls in progress, of every instance
sharing the store, as JSON). A deliberately tiny HTTP/1.1 server on the event loop:
one request per connection, bounded in size and time."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from edgeproxy.state.errors import StoreError

log = structlog.get_logger(__name__)

MAX_REQUEST = 8192
TIMEOUT = 5.0


class OpsServer:
    def __init__(self, readiness: Callable[[], Awaitable[tuple[bool, str]]],
                 calls: Callable[[], Awaitable[list[dict[str, object]]]],
                 metrics: Callable[[], Awaitable[bytes]]) -> None:
        self.readiness = readiness
        self.calls = calls
        self.metrics = metrics
        self._server: asyncio.AbstractServer | None = None

    async def start(self, listen: str) -> None:
        """On `HOST:PORT`, or on an abstract Unix socket `@NAME` (a worker's, read by its supervisor)."""
        if listen.startswith("@"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind("\0" + listen[1:])
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)
            return
        host, _, port = listen.rpartition(":")
        self._server = await asyncio.start_server(self._serve, host.strip("[]"), int(port), limit=MAX_REQUEST)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, ctype, body = await self._answer(method, path.split("?", 1)[0])
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + (b"" if method == "HEAD" else body))
            await asyncio.wait_for(writer.drain(), TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError, OSError):
            pass  # a client that cannot say what it wants gets the connection closed
        finally:
            writer.close()

    async def _answer(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, await self.metrics()
        if path == "/health":
            return "200 OK", "text/plain", b"ok\n"
        if path == "/ready":
            ready, reason = await self.readiness()
            return ("200 OK" if ready else "503 Service Unavailable"), "text/plain", f"{reason}\n".encode()
        if path == "/calls":
            try:
                calls = await self.calls()
            except StoreError as err:
                return "503 Service Unavailable", "text/plain", f"state store: {err}\n".encode()
            return "200 OK", "application/json", json.dumps({"calls": calls, "count": len(calls)}).encode()
        return "404 Not Found", "text/plain", b"/metrics, /health, /ready, /calls\n"
