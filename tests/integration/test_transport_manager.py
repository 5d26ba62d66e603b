"""The transport manager in-process: connection reuse, aliasing, outbound connects, NAT pings."""

from __future__ import annotations

import asyncio
import socket
import time

from edgeproxy.config import Config, KeepaliveConfig, ListenSpec, ServerConfig
from edgeproxy.transport.base import Source, Target
from edgeproxy.transport.keepalive import NatPinger
from edgeproxy.transport.manager import TransportManager
from tests.helpers import free_port, options


async def started(received: list[tuple[bytes, Source]]) -> tuple[TransportManager, int]:
    port = free_port()
    config = Config(server=ServerConfig(listen=[ListenSpec("udp", "127.0.0.1", port),
                                                ListenSpec("tcp", "127.0.0.1", port)]))
    manager = TransportManager(config, lambda data, source: received.append((data, source)))
    await manager.start()
    return manager, port


async def until(predicate, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_request_toward_a_client_reuses_its_connection() -> None:
    received: list[tuple[bytes, Source]] = []
    manager, port = await started(received)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(options(f"sip:127.0.0.1:{port}", "TCP"))
        await until(lambda: received)
        source = received[0][1]
        assert source.transport == "tcp" and source.connection is not None and len(manager.table) == 1
        # a new message toward the client's address goes over the same connection
        manager.send(b"NOTIFY-BYTES", Target("tcp", source.remote))
        assert await asyncio.wait_for(reader.readexactly(12), 3) == b"NOTIFY-BYTES"
        # RFC 5923 alias: the client's advertised sent-by reaches it too
        manager.table.alias(source.connection, ("198.51.100.7", 5060))
        manager.send(b"ALIASED", Target("tcp", ("198.51.100.7", 5060)))
        assert await asyncio.wait_for(reader.readexactly(7), 3) == b"ALIASED"
        writer.close()
        await until(lambda: len(manager.table) == 0)
        assert manager.table.find("tcp", ("198.51.100.7", 5060)) is None
    finally:
        await manager.close()


async def test_outbound_connect_when_no_connection_exists() -> None:
    received: list[tuple[bytes, Source]] = []
    manager, _ = await started(received)
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.set_result(await reader.readexactly(5))
        writer.close()

    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()[:2]
    errors: list[Exception] = []
    try:
        manager.send(b"HELLO", Target("tcp", address), on_error=lambda err, _: errors.append(err))
        assert await asyncio.wait_for(got, 3) == b"HELLO"
        closed = free_port()  # nobody listens there: the error is reported, not raised
        manager.send(b"X", Target("tcp", ("127.0.0.1", closed)), on_error=lambda err, _: errors.append(err))
        await until(lambda: errors)
        manager.send(b"X", Target("ws", ("127.0.0.1", closed)), on_error=lambda err, _: errors.append(err))
        assert len(errors) == 2
    finally:
        server.close()
        await manager.close()


async def test_nat_pinger_sends_crlf_or_options() -> None:
    loop = asyncio.get_running_loop()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    received: list[tuple[bytes, Source]] = []
    manager, port = await started(received)
    try:
        for mode in ("crlf", "options"):
            pinger = NatPinger(mode, 0.05, 10, manager.send, lambda: ("127.0.0.1", port))
            assert pinger.watch(client.getsockname(), time.time() + 60)
            pinger.start()
            data = await asyncio.wait_for(loop.sock_recv(client, 65535), 3)
            pinger.stop()
            if mode == "crlf":
                assert data == b"\r\n\r\n"
            else:
                assert data.startswith(b"OPTIONS sip:127.0.0.1:") and b"Via: SIP/2.0/UDP 127.0.0.1:" in data
        full = NatPinger("crlf", 1, 2, manager.send, lambda: ("127.0.0.1", port))
        assert full.watch(("127.0.0.1", 1), time.time() + 60) and full.watch(("127.0.0.1", 2), time.time() - 1)
        assert not full.watch(("127.0.0.1", 3), time.time() + 60) and len(full) == 2  # bounded
        await full.ping_all()
        assert len(full) == 1  # the expired registration is no longer pinged
        assert not NatPinger("off", 1, 2, manager.send, lambda: ("127.0.0.1", port)).watch(("127.0.0.1", 1), 0)
        assert KeepaliveConfig().mode == "off"
    finally:
        client.close()
        await manager.close()
